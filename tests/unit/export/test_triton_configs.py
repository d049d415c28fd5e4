"""Export writes both Triton configurations of one model.onnx: CPU (python backend) and GPU."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_gpu_and_cpu_configs_serve_the_same_model(trained_repo: Path) -> None:
    model_dir = trained_repo / "orbithash"
    cpu, gpu = parse(model_dir / "config.pbtxt"), parse(model_dir / "configs" / "gpu.pbtxt")
    assert cpu.backend == "python" and gpu.platform == "onnxruntime_onnx"
    assert [g.kind for g in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    accelerators = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt"]
    assert gpu.dynamic_batching.max_queue_delay_microseconds > 0 and gpu.model_warmup
    assert gpu.parameters == cpu.parameters and len(cpu.parameters) >= 7
    graph = onnx.load(str(model_dir / "1" / "model.onnx"), load_external_data=False).graph
    for config in (cpu, gpu):
        assert [i.name for i in config.input] == [i.name for i in graph.input]
        assert [o.name for o in config.output] == [o.name for o in graph.output]
        assert list(config.input[0].dims) == [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]
