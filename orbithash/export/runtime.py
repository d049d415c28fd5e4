"""An exported model run in-process with ONNX Runtime: the embedded encoder and evaluation share it.

It reads its facts from the ONNX metadata and takes N×3×S×S uint8 pixels (the graph normalises),
so what is evaluated here is byte for byte what the encoder serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orbithash import Unavailable
from orbithash.bits import pack_signs
from orbithash.images import pixels_batch
from orbithash.model_facts import INPUT_NAME, OUTPUT_LOGITS, OUTPUT_U, ModelFacts, ModelFactsError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ExportedModel:
    def __init__(self, model_path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        if not Path(model_path).is_file():
            raise Unavailable(f"no model at {model_path}: run `orbithash train` first")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: the CPU they would burn between requests
        # belongs to the decode and RPC work of the other processes on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.facts = ModelFacts.from_params(dict(self._session.get_modelmeta().custom_metadata_map))
        given = self._session.get_inputs()[0].type
        if given != "tensor(uint8)":
            raise ModelFactsError(f"{model_path} takes {given}, not uint8 pixels: an older export, train again")

    def infer(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 pixels → (u, logits)."""
        u, logits = self._session.run([OUTPUT_U, OUTPUT_LOGITS], {INPUT_NAME: pixels})
        return np.asarray(u, np.float32), np.asarray(logits, np.float32)

    def encode(self, images: Sequence[bytes], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Image bytes → (packed codes, class probabilities), in batches."""
        codes, probs = [], []
        for start in range(0, len(images), batch):
            u, logits = self.infer(pixels_batch(list(images[start:start + batch]), self.facts))
            codes.append(pack_signs(u))
            probs.append(softmax(logits.astype(np.float64)))
        return np.concatenate(codes), np.concatenate(probs)
