"""Asymmetric re-ranking by -u·b, ties by id."""

from __future__ import annotations

import numpy as np
import pytest

from orbithash import InvalidInput
from orbithash.index.rerank import rerank_asymmetric


def test_rerank_asymmetric_orders_by_u_dot_b_then_id() -> None:
    bits = 12
    u = np.array([0.9, -0.1, 0.5, -2.0, 0.0, 0.3, 0.3, -0.3, 1.0, -1.0, 0.2, 0.1])
    rng = np.random.default_rng(4)
    signs = rng.integers(0, 2, (30, bits), dtype=np.uint8)
    signs[5] = signs[6]  # equal codes: the id decides
    ids = [f"c{v:02d}" for v in rng.permutation(30)]
    codes = np.packbits(signs, axis=1)
    order = rerank_asymmetric(u, codes, bits, ids)
    score = (-(signs.astype(float) * 2 - 1) @ u).astype(np.float32)  # as a shard sends it
    assert order == sorted(range(30), key=lambda i: (score[i], ids[i]))
    assert sorted(order) == list(range(30))
    assert order.index(5) < order.index(6) if ids[5] < ids[6] else order.index(6) < order.index(5)
    best = np.packbits((u > 0).astype(np.uint8))[None]  # sign(u) itself scores best of all codes
    assert rerank_asymmetric(u, np.concatenate([codes, best]), bits, [*ids, "zz"])[0] == 30
    assert rerank_asymmetric(u, codes[:0], bits, []) == []
    with pytest.raises(InvalidInput):
        rerank_asymmetric(u[:5], codes, bits, ids)
    with pytest.raises(InvalidInput):
        rerank_asymmetric(u, codes[:, :1], bits, ids)
    with pytest.raises(InvalidInput):
        rerank_asymmetric(u, codes, bits, ids[:3])


def test_scores_equal_as_sent_are_ordered_by_id() -> None:
    """A shard sends float32 scores; ranked on float64 its ties were not by id, and the gateway's
    merge (which keeps one shard's own order among equal keys) returned them out of id order."""
    bits = 8
    u = np.array([1.0, 0.99999994, 1, 1, 1, 1, 1, 1], np.float32)  # a saturated tanh output
    codes = np.array([[0b01111111], [0b10111111]], np.uint8)  # differ on bits 0 and 1 only
    signs = np.unpackbits(codes, axis=1).astype(np.float64) * 2 - 1
    score = -(signs @ u.astype(np.float64))
    assert score[1] < score[0] and np.float32(score[0]) == np.float32(score[1])  # apart in float64 only
    assert rerank_asymmetric(u, codes, bits, ["a", "z"]) == [0, 1]
    assert rerank_asymmetric(u, codes, bits, ["z", "a"]) == [1, 0]
