"""Export a trained HashNet as a Triton model: ``<repo>/<name>/1/model.onnx`` + ``config.pbtxt``.

The model carries its own facts (bits, classes, preprocessing, version) in the ONNX metadata and
in the Triton config's ``parameters``; consumers read them from there, never from constants.
The version is a content hash, so two different trainings never share one.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import onnx
import torch

from orbithash.export.repository import (
    PYTHON_MODEL_FILE,
    config_path,
    fp32_model_path,
    model_path,
    serving_record_path,
)
from orbithash.export.triton.configs import gpu_config
from orbithash.files import atomic_write
from orbithash.model_facts import INPUT_NAME, OUTPUT_LOGITS, OUTPUT_U, ModelFacts, ModelFactsError
from orbithash.models import HashNet

OPSET = 17
MAX_BATCH_SIZE = 64
# No wait on CPU: one model instance is busy under load, so requests queue and leave together
# anyway; a wait only held a lone request back (docs/triton.md, "Dynamic batching").
QUEUE_DELAY_US = 0
# Triton's python backend runs model.onnx through this file (the pip tritonserver has no ORT backend).
TRITON_PYTHON_MODEL = Path(__file__).parent / "triton" / "model.py"


def export_model(model: HashNet, facts: ModelFacts, repo_dir: Path, model_name: str = "orbithash") -> Path:
    """Write the ONNX model and Triton config; return the ONNX path.

    ``facts.name`` becomes ``model_name`` and ``facts.version`` the first 12 hex digits of the
    sha256 of the metadata-free ONNX bytes plus the other facts; ``load_facts_from_onnx`` on
    the returned path gives the final facts.
    """
    if facts.bits != model.bits or len(facts.class_names) != model.head.num_classes:
        raise ModelFactsError(
            f"facts say {facts.bits} bits/{len(facts.class_names)} classes, the model has "
            f"{model.bits} bits/{model.head.num_classes} classes"
        )
    serving = ServingNet(model, facts).train(model.training)  # export restores this mode afterwards
    proto = onnx.load_from_string(onnx_bytes(serving, facts.input_size, [INPUT_NAME], [OUTPUT_U, OUTPUT_LOGITS],
                                             dtype=torch.uint8))
    del proto.metadata_props[:]
    facts = replace(facts, name=model_name, version="pending")
    described = json.dumps({k: v for k, v in facts.to_params().items() if k != "orbithash.version"},
                           sort_keys=True)
    digest = hashlib.sha256(proto.SerializeToString() + described.encode())
    facts = replace(facts, version=digest.hexdigest()[:12])
    for key, value in facts.to_params().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)

    path = model_path(repo_dir, model_name)
    atomic_write(path, proto.SerializeToString())
    # A new FP32 model.onnx: an earlier model's FP32 copy and serving record no longer describe it.
    for stale in (fp32_model_path(repo_dir, model_name), serving_record_path(repo_dir, model_name)):
        stale.unlink(missing_ok=True)
    atomic_write(config_path(repo_dir, model_name), triton_config(facts, model_name).encode())
    atomic_write(path.parent / PYTHON_MODEL_FILE, TRITON_PYTHON_MODEL.read_bytes())
    # The same model.onnx on NVIDIA's Triton image: `tritonserver --model-config-name=gpu`.
    atomic_write(path.parent.parent / "configs" / "gpu.pbtxt", gpu_config(triton_config(facts, model_name)).encode())
    return path


class PixelNormalise(torch.nn.Module):
    """(pixels − mean) / std per channel on N×3×S×S pixels: the one normalisation that training
    (``orbithash.training.scratch``) and the served graph share, so the two cannot drift apart."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.mean) / self.std


class ServingNet(torch.nn.Module):
    """What Triton and the encoder run: uint8 pixels in, normalised inside the graph.

    Pixels are a quarter of the bytes of float32 tensors on every hop (encoder → Triton over
    gRPC, and onto the GPU), and the normalisation travels with the model it belongs to.
    """

    def __init__(self, model: HashNet, facts: ModelFacts) -> None:
        super().__init__()
        self.model = model
        self.normalise = PixelNormalise(facts.mean, facts.std)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(self.normalise(pixels))


def onnx_bytes(module: torch.nn.Module, input_size: int, input_names: list[str],
               output_names: list[str], dtype: torch.dtype = torch.float32) -> bytes:
    """Serialized ONNX (opset 17) of ``module`` on N×3×S×S input of ``dtype``, batch size dynamic."""
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    batch = {name: {0: "batch"} for name in (*input_names, *output_names)}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The torch.export-based exporter needs onnxscript, which this project does not ship;
            # the TorchScript exporter announces its deprecation on every call, and notes that
            # the backbone's strided Slice ops are not constant-folded (they run fine).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "Constant folding", UserWarning)
            # Pooling bins read the feature map's size as Python ints: constant by design, since a
            # served model has one input size (only the batch axis is dynamic).
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(module, (torch.zeros(2, 3, input_size, input_size, dtype=dtype),), buf,
                              input_names=input_names, output_names=output_names, dynamic_axes=batch,
                              opset_version=OPSET, dynamo=False)
    finally:
        module.train(was_training)
    return buf.getvalue()


def pbtxt_string(value: str) -> str:
    """A protobuf text-format string literal: quotes, backslashes, controls and non-ASCII escaped."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def triton_config(facts: ModelFacts, model_name: str) -> str:
    """config.pbtxt for Triton's python backend (its model.py runs model.onnx with ONNX Runtime)."""
    size = facts.input_size
    lines = [
        f"name: {pbtxt_string(model_name)}",
        'backend: "python"',
        f"max_batch_size: {MAX_BATCH_SIZE}",
        "input [",
        f'  {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: [ 3, {size}, {size} ] }}',
        "]",
        "output [",
        f'  {{ name: "{OUTPUT_U}" data_type: TYPE_FP32 dims: [ {facts.bits} ] }},',
        f'  {{ name: "{OUTPUT_LOGITS}" data_type: TYPE_FP32 dims: [ {len(facts.class_names)} ] }}',
        "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}",
        "instance_group [ { kind: KIND_CPU count: 1 } ]",
    ]
    for key, value in facts.to_params().items():
        lines.append(f"parameters {{ key: {pbtxt_string(key)} value: {{ string_value: {pbtxt_string(value)} }} }}")
    return "\n".join(lines) + "\n"
