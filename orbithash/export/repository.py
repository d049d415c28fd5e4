"""The Triton model repository layout: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.onnx``.

The one place that knows the layout; exporters, the encoder, the launcher and the benches ask it
for paths. Standard library only, so every role can import it.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_NAME = "orbithash"
MODEL_VERSION_DIR = "1"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
PYTHON_MODEL_FILE = "model.py"
# When the export serves a faster variant as model.onnx, the FP32 export stays beside it, and a
# record in the model's folder says which variant is served, with its mAP and speed (``quantize``).
FP32_MODEL_FILE = "model.fp32.onnx"
SERVING_RECORD_FILE = "serving.json"


def model_path(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    return Path(repo_dir) / model_name / MODEL_VERSION_DIR / MODEL_FILE


def config_path(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    return Path(repo_dir) / model_name / CONFIG_FILE


def fp32_model_path(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    """The FP32 export, kept beside ``model.onnx`` once a variant is chosen (absent before)."""
    return model_path(repo_dir, model_name).with_name(FP32_MODEL_FILE)


def serving_record_path(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    return Path(repo_dir) / model_name / SERVING_RECORD_FILE
