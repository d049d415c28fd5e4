"""What every trainer returns, how it is scored and how it is exported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orbithash.bits import pack_signs
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


def export_trained(result: TrainResult, repo_dir: Path, model_name: str = "orbithash") -> ModelFacts:
    """Export a trained model to ``repo_dir/<model_name>``; the final facts (with the version)."""
    path = export_model(result.model, result.facts, Path(repo_dir), model_name)
    return load_facts_from_onnx(path)
