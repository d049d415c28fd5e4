"""The Triton model repository layout: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.onnx``.

The one place that knows the layout; exporters, the encoder, the launcher and the benches ask it
for paths. Reading a model's facts needs only the ``onnx`` package, never torch.
"""

from __future__ import annotations

from pathlib import Path

from orbithash.model_facts import ModelFacts, ModelFactsError

DEFAULT_MODEL_NAME = "orbithash"
MODEL_VERSION_DIR = "1"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
PYTHON_MODEL_FILE = "model.py"


def model_path(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    return Path(repo_dir) / model_name / MODEL_VERSION_DIR / MODEL_FILE


def config_path(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    return Path(repo_dir) / model_name / CONFIG_FILE


def load_facts_from_onnx(path: Path) -> ModelFacts:
    """The facts stored in an exported model's metadata; ModelFactsError when absent or malformed."""
    import onnx  # only readers of exported files need it
    from google.protobuf.message import DecodeError

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
