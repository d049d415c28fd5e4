"""Triton configurations of the exported model for NVIDIA's Triton image (ONNX Runtime backend).

The exported ``config.pbtxt`` serves ``model.onnx`` through the python backend (the pip-installed
tritonserver has no ONNX Runtime backend). NVIDIA's image serves the same file with the
``onnxruntime_onnx`` platform: on GPU with TensorRT (``configs/gpu.pbtxt``, chosen with
``tritonserver --model-config-name=gpu``) or on CPU (``cpu_variant``). Name, inputs, outputs and the
model's facts (``parameters``) are kept line for line; only the serving lines are replaced.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).with_name("gpu.pbtxt.template")
CPU_CONFIG_NAME = "cpu"  # --model-config-name used by deploy/k8s/overlays/cpu
REPLACED = ("backend:", "max_batch_size:", "dynamic_batching", "instance_group")
INPUT = re.compile(r'\{ name: "(?P<name>\w+)" data_type: (?P<type>TYPE_\w+) dims: \[ 3, (?P<size>\d+), (?P=size) \] \}')
GPU_ONLY = re.compile(r"^# gpu-only: begin.*?^# gpu-only: end\n", re.M | re.S)


def gpu_config(cpu_config: str) -> str:
    """The GPU config.pbtxt for the model described by an exported (python backend) config."""
    lines = cpu_config.splitlines()
    found = [next((i for i, line in enumerate(lines) if line.startswith(key)), None) for key in REPLACED]
    if None in found:
        raise ValueError(f"not a config written by `orbithash train`: it lacks one of {REPLACED}")
    match = INPUT.search(cpu_config)
    if match is None:
        raise ValueError("no input of shape [3, S, S] in the config")
    block = Template(TEMPLATE.read_text()).substitute(INPUT_NAME=match["name"], INPUT_TYPE=match["type"],
                                                          INPUT_SIZE=match["size"])
    kept = [line for i, line in enumerate(lines) if i not in found]
    kept.insert(min(found), block.rstrip("\n"))  # type: ignore[type-var]
    return "\n".join(kept) + "\n"


def cpu_variant(gpu: str) -> str:
    """The same config on a CPU instance, without the GPU accelerator."""
    return GPU_ONLY.sub("", gpu).replace("kind: KIND_GPU", "kind: KIND_CPU")
