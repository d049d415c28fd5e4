"""Score hash codes, and sweep methods × code lengths on one set of cached features.

``evaluate_codes`` computes, query chunk by query chunk (a 10k × 50k protocol never holds its
whole distance matrix): mAP over the whole database with ties broken by database order (what
the index service returns), the tie-aware mAP beside it, mAP@k, precision@k, precision within
Hamming radius 2, the precision–recall curve over Hamming radii, and the classifier's accuracy.
``sweep`` fits every method (a loss of ``orbithash.losses`` on the head, or the LSH/ITQ
baselines) on the *database* features, codes the queries, and scores them; nothing is chosen on
the queries. ``write_report`` stores the JSON report and the PNG plots.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orbithash.bits import pack_signs
from orbithash.data import Split
from orbithash.evaluation.baselines import fit_itq, fit_lsh
from orbithash.evaluation.metrics import (
    accuracy,
    average_precisions,
    hamming_distances,
    precision_at,
    radius_counts,
    relevance,
    stable_ranking,
    tie_aware_average_precisions,
)
from orbithash.losses import LOSSES, make_loss
from orbithash.training.config import HeadConfig
from orbithash.training.features import Features
from orbithash.training.finetune import fit_head

log = logging.getLogger(__name__)

BASELINES = ("itq", "lsh")
DEFAULT_KS = (10, 100, 1000)
_CHUNK_ENTRIES = 1 << 24  # query-chunk × database distances held at once


def evaluate_codes(query_codes: np.ndarray, query_labels: np.ndarray, db_codes: np.ndarray,
                   db_labels: np.ndarray, *, bits: int, ks: Sequence[int] = DEFAULT_KS, radius: int = 2,
                   query_scores: np.ndarray | None = None) -> dict[str, Any]:
    """The retrieval report of packed codes (and the accuracy of ``query_scores`` when given).

    Precision within radius r counts a query whose Hamming ball holds no item as precision 0
    (the DPSH/DSH convention); ``empty_radius_share`` says how often that happened. The PR curve
    has one point per radius 0..K: recall averaged over all queries, precision over the queries
    whose ball is not empty.
    """
    q_labels, d_labels = np.asarray(query_labels), np.asarray(db_labels)
    n_q, n_d = len(query_codes), len(db_codes)
    if n_q == 0 or n_d == 0:
        raise ValueError("need at least one query and one database item")
    ks = tuple(k for k in ks if k <= n_d) or (n_d,)
    aps, tie_aps = np.empty(n_q), np.empty(n_q)
    aps_k = {k: np.empty(n_q) for k in ks}
    prec_k = {k: np.empty(n_q) for k in ks}
    counts = np.empty((n_q, bits + 1), np.int64)
    rel_counts = np.empty((n_q, bits + 1), np.int64)
    step = max(1, _CHUNK_ENTRIES // n_d)
    for start in range(0, n_q, step):
        sl = slice(start, start + step)
        dist = hamming_distances(query_codes[sl], db_codes)
        rel = relevance(q_labels[sl], d_labels)
        ranked = stable_ranking(dist, rel)
        aps[sl] = average_precisions(ranked)
        for k in ks:
            aps_k[k][sl] = average_precisions(ranked[:, :k])
            prec_k[k][sl] = precision_at(ranked, k)
        counts[sl], rel_counts[sl] = radius_counts(dist, rel, bits)
        tie_aps[sl] = tie_aware_average_precisions(counts[sl], rel_counts[sl])
    within, rel_within = np.cumsum(counts, axis=1), np.cumsum(rel_counts, axis=1)
    precision_r = np.divide(rel_within, within, out=np.zeros(within.shape), where=within > 0)
    total_rel = rel_within[:, -1:]
    recall_r = np.divide(rel_within, total_rel, out=np.zeros(within.shape), where=total_rel > 0)
    nonempty = within > 0
    curve_precision = np.where(nonempty.any(axis=0),
                               (precision_r * nonempty).sum(axis=0) / np.maximum(nonempty.sum(axis=0), 1), 0.0)
    report: dict[str, Any] = {
        "bits": bits,
        "queries": n_q,
        "database": n_d,
        "map": float(aps.mean()),
        "map_tie_aware": float(tie_aps.mean()),
        "map_at": {str(k): float(v.mean()) for k, v in aps_k.items()},
        "precision_at": {str(k): float(v.mean()) for k, v in prec_k.items()},
        f"precision_radius_{radius}": float(precision_r[:, min(radius, bits)].mean()),
        "empty_radius_share": float(np.mean(within[:, min(radius, bits)] == 0)),
        "pr_curve": {"radius": list(range(bits + 1)), "precision": curve_precision.tolist(),
                     "recall": recall_r.mean(axis=0).tolist()},
    }
    if query_scores is not None:
        report["accuracy"] = accuracy(query_scores, q_labels)
    return report


def method_codes(method: str, features: Features, train_labels: np.ndarray, num_classes: int, bits: int, *,
                 head_config: HeadConfig, loss_params: Mapping[str, float] | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(database codes, query codes, query class scores or None) of one method at ``bits``.

    Deep methods fit the head on every cached view of the training images; the baselines see
    only their unaugmented features (they have no use for labels or views). The database is
    coded from its unaugmented view, as the service codes it.
    """
    db = features.database
    if method in BASELINES:
        train = features.training["orig"]
        fitted = fit_itq(train, bits, seed=seed) if method == "itq" else fit_lsh(train, bits, seed=seed)
        return fitted.encode(db), fitted.encode(features.queries), None
    loss = make_loss(method, **dict(loss_params or {}))
    head = fit_head(features.training, train_labels, bits, num_classes, head_config, seed=seed, loss=loss)
    with torch.no_grad():
        u_db, _ = head(torch.from_numpy(db))
        u_q, logits = head(torch.from_numpy(features.queries))
    return pack_signs(u_db.numpy()), pack_signs(u_q.numpy()), logits.numpy() if loss.trains_classifier else None


def sweep(features: Features, db_labels: np.ndarray, query_labels: np.ndarray, num_classes: int,
          methods: Sequence[str], bits_list: Sequence[int], *, head_config: HeadConfig | None = None,
          loss_params: Mapping[str, Mapping[str, float]] | None = None, seed: int = 0,
          ks: Sequence[int] = DEFAULT_KS, train_labels: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One report per (method, bits), each tagged with both; methods are losses or baselines.

    ``train_labels`` are the training images' labels when they are not the database (DPSH protocol).
    """
    unknown = [m for m in methods if m not in LOSSES and m not in BASELINES]
    if unknown:
        raise KeyError(f"unknown methods {unknown}; known: {sorted(LOSSES) + list(BASELINES)}")
    head_config = head_config or HeadConfig()
    results = []
    for method in methods:
        for bits in bits_list:
            db_codes, q_codes, scores = method_codes(
                method, features, db_labels if train_labels is None else train_labels, num_classes, bits,
                head_config=head_config,
                loss_params=(loss_params or {}).get(method), seed=seed)
            report = evaluate_codes(q_codes, query_labels, db_codes, db_labels, bits=bits, ks=ks,
                                    query_scores=scores)
            log.info("%s %d bits: mAP %.4f", method, bits, report["map"])
            results.append({"method": method, **report})
    return results


def evaluate_exported(model_path: Path, split: Split) -> tuple[dict[str, Any], dict[str, Any]]:
    """Encode the split through the exported ONNX model (as served) and score it."""
    from tqdm import tqdm

    from orbithash.export.runtime import ExportedModel

    model = ExportedModel(model_path)
    facts = model.facts
    if tuple(facts.class_names) != tuple(split.class_names):
        raise ValueError(f"the model knows classes {facts.class_names[:3]}…, the data has {split.class_names[:3]}…")
    parts = {}
    for part in ("database", "queries"):
        records = getattr(split, part)
        codes, probs = [], []
        for start in tqdm(range(0, len(records), 32), desc=f"encode {part}", unit="batch"):
            c, p = model.encode([r.data for r in records[start:start + 32]])
            codes.append(c)
            probs.append(p)
        parts[part] = (np.concatenate(codes), np.concatenate(probs))
    report = evaluate_codes(parts["queries"][0], split.labels("queries"), parts["database"][0],
                            split.labels("database"), bits=facts.bits, query_scores=parts["queries"][1])
    result = {"method": f"{facts.method} (exported {facts.version})", **report}
    meta = {"dataset": split.name, "model": facts.name, "model_version": facts.version, "backbone": facts.backbone,
            "database": len(split.database), "queries": len(split.queries), "ties": "database order (stable sort)"}
    return result, meta


def write_report(results: list[dict[str, Any]], out_dir: Path, meta: Mapping[str, Any]) -> dict[str, Path]:
    """report.json (meta + every result) and the plots; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "pr": out_dir / "pr_curves.png",
             "map_vs_bits": out_dir / "map_vs_bits.png"}
    paths["json"].write_text(json.dumps({"meta": dict(meta), "results": results}, indent=1))
    plot_pr_curves(results, paths["pr"])
    plot_map_vs_bits(results, paths["map_vs_bits"])
    return paths


def plot_pr_curves(results: list[dict[str, Any]], path: Path) -> None:
    """Hamming-radius PR curves, one panel per code length, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits_list = sorted({r["bits"] for r in results})
    fig, axes = plt.subplots(1, len(bits_list), figsize=(4 * len(bits_list), 3.6), squeeze=False)
    for ax, bits in zip(axes[0], bits_list, strict=True):
        for r in (r for r in results if r["bits"] == bits):
            ax.plot(r["pr_curve"]["recall"], r["pr_curve"]["precision"], marker=".", label=r["method"])
        ax.set(title=f"{bits} bits", xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_map_vs_bits(results: list[dict[str, Any]], path: Path) -> None:
    """mAP (ties by database order) against code length, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method in dict.fromkeys(r["method"] for r in results):
        rows = sorted((r["bits"], r["map"]) for r in results if r["method"] == method)
        ax.plot([b for b, _ in rows], [m for _, m in rows], marker="o", label=method)
    ax.set(xlabel="bits", ylabel="mAP", title="mAP vs code length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(results: list[dict[str, Any]], key: str = "map") -> str:
    """A method × bits text table of one figure (``map`` by default)."""
    bits_list = sorted({r["bits"] for r in results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    cell = {(r["method"], r["bits"]): r.get(key) for r in results}
    lines = [f"{key:<14}" + "".join(f"{b:>9}" for b in bits_list)]
    for m in methods:
        values = (cell.get((m, b)) for b in bits_list)
        lines.append(f"{m:<14}" + "".join(f"{v:>9.4f}" if v is not None else f"{'-':>9}" for v in values))
    return "\n".join(lines)
