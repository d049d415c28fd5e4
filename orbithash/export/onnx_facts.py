"""Reading the facts an exported model carries in its ONNX metadata (needs ``onnx``, not torch)."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from orbithash.export.repository import DEFAULT_MODEL_NAME, config_path, model_path
from orbithash.model_facts import ModelFacts, ModelFactsError


def load_facts_from_onnx(path: Path) -> ModelFacts:
    """The facts stored in an exported model's metadata; ModelFactsError when absent or malformed."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as exc:
        raise ModelFactsError(f"cannot read model {path}: {exc}") from exc
    inputs = proto.graph.input
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        raise ModelFactsError(f"{path} does not take one uint8 pixel input: an older export, train again")
    return ModelFacts.from_params({p.key: p.value for p in proto.metadata_props})


def exported_facts(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> ModelFacts | None:
    """Facts of an already exported model, or None when none is there (ModelFactsError if broken)."""
    path = model_path(repo_dir, model_name)
    if not path.exists() or not config_path(repo_dir, model_name).exists():
        return None
    return load_facts_from_onnx(path)
