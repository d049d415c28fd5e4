"""Retrieval and classification metrics on packed binary codes.

Many database codes share one Hamming distance, so the tie order changes mAP by 1–2 %. Here ties
are broken by database order (a stable sort), the order the index service answers in, so an
offline mAP equals the mAP of the served rankings.
"""

from __future__ import annotations

import numpy as np

POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)
_CHUNK_BYTES = 1 << 25  # bound on the query-chunk × database × code-bytes XOR buffer


def hamming_distances(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """Q×D Hamming distances between packed uint8 codes (Q×B and D×B)."""
    q = np.asarray(query_codes, np.uint8)
    d = np.asarray(db_codes, np.uint8)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"codes must be Q×B and D×B with one B, got {q.shape} and {d.shape}")
    out = np.empty((q.shape[0], d.shape[0]), np.int32)
    step = max(1, _CHUNK_BYTES // max(1, d.shape[0] * d.shape[1]))
    for start in range(0, q.shape[0], step):
        xor = q[start:start + step, None, :] ^ d[None, :, :]
        out[start:start + step] = POPCOUNT[xor].sum(axis=2, dtype=np.int32)
    return out


def average_precision(ranked_relevance: np.ndarray) -> float:
    """AP of one ranked 0/1 relevance list: mean of precision@k over the relevant positions k.

    The list is taken as complete (relevant items absent from it are not counted); 0 when it
    holds no relevant item.
    """
    rel = np.asarray(ranked_relevance).astype(bool).ravel()
    hits = np.cumsum(rel)
    if hits.size == 0 or hits[-1] == 0:
        return 0.0
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(hits[rel] / ranks))


def _relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Q×D bool: same class (int labels) or at least one shared label (multi-hot rows)."""
    ql, dl = np.asarray(query_labels), np.asarray(db_labels)
    if ql.ndim == 1 and dl.ndim == 1:
        return ql[:, None] == dl[None, :]
    return (ql.astype(np.float32) @ dl.astype(np.float32).T) > 0


def mean_average_precision(query_codes: np.ndarray, query_labels: np.ndarray, db_codes: np.ndarray,
                           db_labels: np.ndarray, *, bits: int, topk: int | None = None) -> float:
    """mAP of Hamming ranking (ties broken by database order), over the top ``topk`` or all.

    AP@k divides by the relevant items retrieved within the top k (the DPSH/DSH convention).
    """
    q = np.asarray(query_codes, np.uint8)
    d = np.asarray(db_codes, np.uint8)
    nbytes = (bits + 7) // 8
    if q.shape[-1] != nbytes or d.shape[-1] != nbytes:
        raise ValueError(f"{bits} bits need {nbytes}-byte codes, got {q.shape[-1]} and {d.shape[-1]}")
    if len(q) != len(query_labels) or len(d) != len(db_labels):
        raise ValueError("one label per code is needed")
    if len(q) == 0:
        raise ValueError("no queries")
    dist = hamming_distances(q, d)
    relevant = _relevance(query_labels, db_labels)
    k = d.shape[0] if topk is None else min(topk, d.shape[0])
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    ranked = np.take_along_axis(relevant, order, axis=1)
    return float(np.mean([average_precision(row) for row in ranked]))


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Share of correct predictions; ``pred`` holds class indices or N×C scores (argmax)."""
    p = np.asarray(pred)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    y = np.asarray(labels)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must match and be non-empty")
    return float(np.mean(p == y))
