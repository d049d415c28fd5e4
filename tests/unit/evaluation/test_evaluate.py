"""The evaluation report on a hand example, the method sweep, and the plots and JSON it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orbithash.evaluation.evaluate import evaluate_codes, sweep, write_report
from orbithash.training.config import HeadConfig
from orbithash.training.features import Features

DB_CODES = np.array([[0b00000000], [0b00000011], [0b00000001], [0b10000000]], np.uint8)
DB_LABELS = np.array([1, 1, 0, 1])
QUERY = np.array([[0b00000000]], np.uint8)


def test_report_by_hand() -> None:
    # Distances 0, 2, 1, 1; stable ranking relevance 1, 0, 1, 1.
    report = evaluate_codes(QUERY, np.array([1]), DB_CODES, DB_LABELS, bits=8, ks=(2, 3),
                            query_scores=np.array([[0.1, 0.9]]))
    assert report["map"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert report["map_tie_aware"] == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + (1 + 1 + 3 / 4) / 3) / 2)
    assert report["map_at"] == pytest.approx({"2": 1.0, "3": (1 + 2 / 3) / 2})
    assert report["precision_at"] == pytest.approx({"2": 0.5, "3": 2 / 3})
    assert report["precision_radius_2"] == pytest.approx(3 / 4)  # all four items lie within 2
    assert report["empty_radius_share"] == 0.0
    curve = report["pr_curve"]
    assert curve["precision"][:3] == pytest.approx([1.0, 2 / 3, 3 / 4])
    assert curve["recall"][:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert report["accuracy"] == 1.0


def test_a_query_with_an_empty_ball_scores_precision_zero() -> None:
    far = np.array([[0b11111111]], np.uint8)
    report = evaluate_codes(far, np.array([1]), DB_CODES, DB_LABELS, bits=8, ks=(2,))
    assert report["precision_radius_2"] == 0.0 and report["empty_radius_share"] == 1.0


def test_chunking_does_not_change_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    q, d = rng.integers(0, 256, (9, 2), dtype=np.uint8), rng.integers(0, 256, (30, 2), dtype=np.uint8)
    ql, dl = rng.integers(0, 3, 9), rng.integers(0, 3, 30)
    whole = evaluate_codes(q, ql, d, dl, bits=16, ks=(5,))
    monkeypatch.setattr("orbithash.evaluation.evaluate._CHUNK_ENTRIES", 60)  # two queries per chunk
    assert evaluate_codes(q, ql, d, dl, bits=16, ks=(5,)) == whole


def _features(seed: int = 0) -> tuple[Features, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 24)).astype(np.float32) * 2
    db_labels, q_labels = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 5)
    db = centres[db_labels] + rng.standard_normal((60, 24)).astype(np.float32)
    q = centres[q_labels] + rng.standard_normal((15, 24)).astype(np.float32)
    return Features({"orig": db}, q), db_labels, q_labels


def test_sweep_runs_every_method_and_writes_json_and_plots(tmp_path: Path) -> None:
    features, db_labels, q_labels = _features()
    config = HeadConfig(epochs=5, batch_size=32, views=("orig",))
    results = sweep(features, db_labels, q_labels, 3, ["dhcnn", "dsh", "itq", "lsh"], [8, 16],
                    head_config=config, ks=(10,))
    assert [(r["method"], r["bits"]) for r in results] == [
        (m, b) for m in ("dhcnn", "dsh", "itq", "lsh") for b in (8, 16)]
    assert all(0.0 <= r["map"] <= 1.0 for r in results)
    assert "accuracy" in results[0] and "accuracy" not in results[2]  # only a classifier has one
    assert max(r["map"] for r in results if r["method"] == "dhcnn") > 0.8
    paths = write_report(results, tmp_path / "out", {"dataset": "toy"})
    data = json.loads(paths["json"].read_text())
    assert data["meta"] == {"dataset": "toy"} and len(data["results"]) == 8
    for key in ("pr", "map_vs_bits"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_refuses_unknown_methods() -> None:
    features, db_labels, q_labels = _features()
    with pytest.raises(KeyError, match="nope"):
        sweep(features, db_labels, q_labels, 3, ["nope"], [8])
