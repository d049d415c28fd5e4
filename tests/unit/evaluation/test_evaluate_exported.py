"""`orbithash evaluate --exported` scores exactly what the encoder serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from encoder_service.backends import OnnxRuntimeBackend
from orbithash.bits import pack_signs
from orbithash.data import Split
from orbithash.evaluation.evaluate import evaluate_exported, write_report
from orbithash.evaluation.metrics import mean_average_precision
from orbithash.images import pixels_batch


def test_exported_model_report_matches_served_codes(trained_repo: Path, ucm_subset: Split, tmp_path: Path) -> None:
    path = trained_repo / "orbithash" / "1" / "model.onnx"
    result, meta = evaluate_exported(path, ucm_subset)
    served = OnnxRuntimeBackend(path)
    codes = {}
    for part in ("database", "queries"):
        u, _ = served.infer(pixels_batch([r.data for r in getattr(ucm_subset, part)], served.facts))
        codes[part] = pack_signs(u)
    expected = mean_average_precision(codes["queries"], ucm_subset.labels("queries"), codes["database"],
                                      ucm_subset.labels("database"), bits=served.facts.bits)
    assert result["map"] == pytest.approx(expected, abs=1e-9)
    assert 0.0 < result["accuracy"] <= 1.0 and meta["model_version"] == served.facts.version
    paths = write_report([result], tmp_path, meta)
    assert json.loads(paths["json"].read_text())["results"][0]["map"] == pytest.approx(expected)
    with Image.open(paths["pr"]) as png:
        assert png.size[0] > 100


def test_exported_model_refuses_other_classes(trained_repo: Path, ucm_subset: Split) -> None:
    other = Split("other", tuple(f"c{i}" for i in range(len(ucm_subset.class_names))), ucm_subset.database[:2],
                  ucm_subset.queries[:2])
    with pytest.raises(ValueError, match="classes"):
        evaluate_exported(trained_repo / "orbithash" / "1" / "model.onnx", other)
