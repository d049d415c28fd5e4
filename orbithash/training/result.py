"""What every trainer returns, how it is scored and how it is exported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orbithash.bits import pack_signs
from orbithash.data import Split
from orbithash.evaluation.metrics import accuracy, mean_average_precision
from orbithash.export.onnx_export import export_model
from orbithash.export.onnx_facts import load_facts_from_onnx
from orbithash.model_facts import ModelFacts
from orbithash.models import HashNet


@dataclass(frozen=True)
class TrainResult:
    model: HashNet
    facts: ModelFacts
    metrics: dict[str, float]


def score(u_db: np.ndarray, db_labels: np.ndarray, u_queries: np.ndarray, query_logits: np.ndarray,
          query_labels: np.ndarray) -> dict[str, float]:
    """mAP over the whole database (Hamming ranking, ties by database order) and query accuracy."""
    return {
        "map": mean_average_precision(pack_signs(u_queries), query_labels, pack_signs(u_db), db_labels,
                                      bits=u_db.shape[1]),
        "accuracy": accuracy(query_logits, query_labels),
    }


def export_trained(result: TrainResult, repo_dir: Path, model_name: str = "orbithash",
                   split: Split | None = None, fp32: bool = False) -> ModelFacts:
    """Export a trained model to ``repo_dir/<model_name>``; the served model's facts (with its version).

    With the model's ``split``, the export also builds the faster variants (graph-optimised, static
    INT8), scores each on the split and serves the fastest whose mAP stays within 0.003 of FP32's
    (``orbithash.export.quantize``); ``model.fp32.onnx`` keeps the FP32 export. Without a split, or
    with ``fp32``, the FP32 export is served as before.
    """
    path = export_model(result.model, result.facts, Path(repo_dir), model_name)
    if split is not None and not fp32:
        from orbithash.export.quantize import serve_fastest

        serve_fastest(Path(repo_dir), split, model_name=model_name)
    return load_facts_from_onnx(path)
