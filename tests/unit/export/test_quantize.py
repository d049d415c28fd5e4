"""The export's faster variants: facts kept, own version, FP32 kept, and the mAP tolerance honoured."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from orbithash.export import quantize
from orbithash.export.onnx_facts import load_facts_from_onnx
from orbithash.export.quantize import FP32, Measured, choose, serve_fastest
from orbithash.export.repository import config_path, fp32_model_path, model_path, serving_record_path
from orbithash.export.runtime import ExportedModel
from orbithash.model_facts import ModelFacts


def measured(variant: str, map_: float, speed: float) -> Measured:
    return Measured(variant, variant, map_, {32: speed})


def test_choose_takes_the_fastest_variant_within_the_tolerance() -> None:
    fp32 = measured(FP32, 0.90, 100.0)
    fast, faster_but_worse = measured("a", 0.898, 150.0), measured("b", 0.896, 200.0)
    assert choose(fp32, [fast, faster_but_worse], tolerance=0.003) is fast
    assert choose(fp32, [fast, faster_but_worse], tolerance=0.005) is faster_but_worse


def test_choose_keeps_fp32_when_no_variant_is_good_or_fast_enough() -> None:
    fp32 = measured(FP32, 0.90, 100.0)
    assert choose(fp32, [measured("a", 0.8969, 300.0)], tolerance=0.003) is fp32  # 0.0031 below
    assert choose(fp32, [measured("a", 0.95, 104.0)], tolerance=0.003) is fp32  # within timing noise
    assert choose(fp32, [], tolerance=0.003) is fp32


@pytest.fixture()
def repo(trained_repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(trained_repo, copy)
    return copy


def stub_rates(paths, pixels, *args, **kwargs) -> dict[str, dict[int, float]]:
    """INT8 twice as fast as FP32 at every batch size, so the choice depends on mAP alone."""
    return {name: {b: (200.0 if name.startswith("int8") else 100.0) for b in quantize.SPEED_BATCHES}
            for name in paths}


def params(path: Path) -> ModelFacts:
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return ModelFacts.from_params({k: v.string_value for k, v in config.parameters.items()}), config


def test_int8_variant_is_served_with_the_facts_and_its_own_version(
        repo: Path, ucm_subset, monkeypatch: pytest.MonkeyPatch) -> None:
    original = model_path(repo).read_bytes()
    fp32_facts = load_facts_from_onnx(model_path(repo))
    monkeypatch.setattr(quantize, "inference_rates", stub_rates)
    record = serve_fastest(repo, ucm_subset, variants=("int8-qdq",), calibration_images=32,
                           scorer=lambda path, data: 0.9)

    assert fp32_model_path(repo).read_bytes() == original  # the FP32 export stays
    served = load_facts_from_onnx(model_path(repo))
    assert record["served"] == "int8-qdq" and record["version"] == served.version
    assert served.version.startswith(f"{fp32_facts.version}-int8-qdq-")
    assert served == replace(fp32_facts, version=served.version)  # every other fact kept
    cpu_facts, _ = params(config_path(repo))
    assert cpu_facts == served  # Triton reports the served file's facts
    gpu_facts, gpu = params(repo / "orbithash" / "configs" / "gpu.pbtxt")
    assert gpu.default_model_filename == "model.fp32.onnx" and gpu_facts == fp32_facts
    assert json.loads(serving_record_path(repo).read_text())["served"] == "int8-qdq"

    # The INT8 model computes nearly the same codes as FP32 (the embedded encoder's runtime).
    pixels = quantize.EvalSet.from_split(ucm_subset, fp32_facts, 1).query_pixels[:16]
    int8_u, _ = ExportedModel(model_path(repo)).infer(pixels)
    fp32_u, _ = ExportedModel(fp32_model_path(repo)).infer(pixels)
    assert np.mean(np.sign(int8_u) == np.sign(fp32_u)) > 0.9

    # Forcing FP32 serves the FP32 export again, FP32 file untouched.
    record = serve_fastest(repo, None, force_fp32=True)
    assert record["served"] == FP32 and model_path(repo).read_bytes() == original
    assert fp32_model_path(repo).read_bytes() == original
    assert params(config_path(repo))[0] == fp32_facts


def test_fp32_stays_served_when_the_variant_loses_more_than_the_tolerance(
        repo: Path, ucm_subset, monkeypatch: pytest.MonkeyPatch) -> None:
    original = model_path(repo).read_bytes()
    monkeypatch.setattr(quantize, "inference_rates", stub_rates)

    def score(path: Path, data) -> float:  # the variant is 0.0031 below FP32
        return 0.9 if path.name == "model.fp32.onnx" else 0.8969

    record = serve_fastest(repo, ucm_subset, variants=("int8-qdq",), calibration_images=32, scorer=score)
    assert record["served"] == FP32 and not record["variants"]["int8-qdq"]["within_tolerance"]
    assert model_path(repo).read_bytes() == original == fp32_model_path(repo).read_bytes()
    assert load_facts_from_onnx(model_path(repo)).version == record["fp32_version"]


def test_a_speed_window_ends_after_max_runs_of_a_fast_model(tmp_path: Path) -> None:
    """A tiny model's window stops at ``max_runs`` instead of lasting ``seconds`` (a minute here)."""
    import time

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["images"], ["out"], to=TensorProto.FLOAT)], "tiny",
                              [helper.make_tensor_value_info("images", TensorProto.UINT8, ["n", 3, 2, 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3, 2, 2])])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    pixels = np.zeros((8, 3, 2, 2), np.uint8)
    started = time.perf_counter()
    rates = quantize.inference_rates({"tiny": path}, pixels, batches=(1, 8), rounds=2, seconds=60.0, max_runs=20)
    assert time.perf_counter() - started < 30
    assert set(rates["tiny"]) == {1, 8} and all(rate > 0 for rate in rates["tiny"].values())
