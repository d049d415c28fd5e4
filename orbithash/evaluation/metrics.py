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


# --- per-query arrays for the evaluation report -----------------------------------------------
# These take one chunk of queries at a time (Q×D distances and relevance) and return one value
# per query, so ``orbithash.evaluation.evaluate`` can bound memory on a 10k × 50k protocol.


def relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Q×D bool: same class (int labels) or at least one shared label (multi-hot rows)."""
    return _relevance(query_labels, db_labels)


def stable_ranking(dist: np.ndarray, relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """Q×k relevance in Hamming order, ties by database order (what the index service returns)."""
    order = np.argsort(dist, axis=1, kind="stable")
    if k is not None:
        order = order[:, :k]
    return np.take_along_axis(relevant, order, axis=1)


def average_precisions(ranked: np.ndarray) -> np.ndarray:
    """``average_precision`` of every row of a Q×k ranked relevance matrix, vectorised."""
    rel = np.asarray(ranked, bool)
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    total = hits[:, -1] if rel.shape[1] else np.zeros(len(rel), np.int64)
    summed = np.where(rel, hits / ranks, 0.0).sum(axis=1)
    return np.divide(summed, total, out=np.zeros(len(rel)), where=total > 0)


def precision_at(ranked: np.ndarray, k: int) -> np.ndarray:
    """Per query, the share of relevant items among the first k of the ranking."""
    k = min(k, ranked.shape[1])
    return np.asarray(ranked[:, :k], bool).sum(axis=1) / k


def radius_counts(dist: np.ndarray, relevant: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Q×(bits+1) counts of items and of relevant items at each Hamming distance 0..bits."""
    q = dist.shape[0]
    flat = (dist + (bits + 1) * np.arange(q)[:, None]).ravel()
    n = np.bincount(flat, minlength=q * (bits + 1)).reshape(q, bits + 1)
    r = np.bincount(flat, weights=relevant.ravel().astype(np.float64), minlength=q * (bits + 1))
    return n, r.reshape(q, bits + 1).astype(np.int64)


def tie_aware_average_precisions(n: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Expected AP over all orders of each tie group (He et al., "Hashing as tie-aware learning
    to rank", CVPR 2018), from the per-distance counts of ``radius_counts``.

    A group at distance d holds n_d items, r_d relevant, after N_d items holding R_d relevant.
    A relevant item lands at place t ∈ 1..n_d with probability 1/n_d and then has on average
    (t − 1)(r_d − 1)/(n_d − 1) relevant items before it inside the group, so the group adds
    r_d/n_d · Σ_t [R_d + 1 + (t − 1)(r_d − 1)/(n_d − 1)] / (N_d + t), summed in closed form with
    harmonic numbers H: Σ_t 1/(N + t) = H(N + n) − H(N), Σ_t (t − 1)/(N + t) = n − (N + 1)·that.
    """
    n = np.asarray(n, np.int64)
    r = np.asarray(r, np.int64)
    before_n = np.cumsum(n, axis=1) - n
    before_r = np.cumsum(r, axis=1) - r
    total = int(n.sum(axis=1).max()) if n.size else 0
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, total + 1))])
    dh = harmonic[before_n + n] - harmonic[before_n]
    inner_slope = np.divide(r - 1, n - 1, out=np.zeros(n.shape), where=n > 1)
    group = (before_r + 1) * dh + inner_slope * (n - (before_n + 1) * dh)
    contrib = np.divide(r, n, out=np.zeros(n.shape), where=n > 0) * group
    relevant = r.sum(axis=1)
    return np.divide(contrib.sum(axis=1), relevant, out=np.zeros(len(n)), where=relevant > 0)
