"""Facts about a trained model that must travel with it (bits, classes, preprocessing, version).

They are written once at export into both the ONNX metadata and Triton's ``config.pbtxt``
parameters, and read back from there by every consumer: nothing else duplicates them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from orbithash import OrbitHashError

INPUT_NAME = "images"
OUTPUT_U = "u"
OUTPUT_LOGITS = "logits"


class ModelFactsError(OrbitHashError):
    """Model metadata is missing or malformed: the model must not be served."""


@dataclass(frozen=True)
class ModelFacts:
    name: str
    version: str
    bits: int
    class_names: tuple[str, ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    method: str = "dhcnn"
    backbone: str = "efficientnet-lite0"

    def __post_init__(self) -> None:
        if not 8 <= self.bits <= 256:
            raise ModelFactsError(f"bits must be in 8..256, got {self.bits}")
        if len(self.class_names) < 2:
            raise ModelFactsError("a model needs at least two class names")
        if self.input_size < 8:
            raise ModelFactsError(f"input_size {self.input_size} is too small")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelFactsError("mean and std need three values, std > 0")
        if not self.version or not self.name:
            raise ModelFactsError("name and version must be set")

    @property
    def code_bytes(self) -> int:
        return (self.bits + 7) // 8

    def to_params(self) -> dict[str, str]:
        """String key/values, the form both ONNX metadata and Triton parameters hold."""
        d = asdict(self)
        return {f"orbithash.{k}": json.dumps(v) for k, v in d.items()}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> ModelFacts:
        prefix = "orbithash."
        raw = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        try:
            values = {k: json.loads(v) for k, v in raw.items()}
            return cls(
                name=str(values["name"]),
                version=str(values["version"]),
                bits=int(values["bits"]),
                class_names=tuple(str(c) for c in values["class_names"]),
                input_size=int(values["input_size"]),
                mean=tuple(float(x) for x in values["mean"]),  # type: ignore[arg-type]
                std=tuple(float(x) for x in values["std"]),  # type: ignore[arg-type]
                method=str(values.get("method", "dhcnn")),
                backbone=str(values.get("backbone", "")),
            )
        except ModelFactsError:
            raise
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFactsError(f"model metadata is incomplete or malformed: {exc!r}") from exc
