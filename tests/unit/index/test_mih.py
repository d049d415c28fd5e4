"""Multi-index hashing returns exactly what the linear scan returns: same ids, same order.

Checked on random, clustered and trained-like codes, for every search mode, and after writes
that leave the tables stale (moves, slot reuse, removes). When auto mode uses the tables:
``test_planner.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.codes import MAKERS, Items, filled_index, random_codes, reference, shuffled_ids, trained_like

from orbithash.index import HammingIndex, mih


def build(bits: int, n: int, kind: str, seed: int) -> tuple[HammingIndex, Items, np.random.Generator]:
    return filled_index(bits, n, kind, seed, threads=2, spare=50)


def assert_same(index: HammingIndex, queries: np.ndarray, k: int, radius: int | None = None,
                label: int | None = None, items: Items | None = None) -> None:
    scan = index.search(queries, k, radius, label, strategy="scan")
    assert index.search(queries, k, radius, label, strategy="mih") == scan
    assert index.search(queries[:1], k, radius, label, strategy="mih") == scan[:1]  # single-query path
    if items is not None:
        bits = index.bits
        assert scan == [reference(items, q, bits, k, radius, label) for q in queries]


@pytest.mark.parametrize("kind", ["random", "clustered", "trained"])
@pytest.mark.parametrize("bits", [8, 24, 48, 64, 100, 256])
def test_mih_equals_scan_and_brute_force(bits: int, kind: str) -> None:
    index, items, rng = build(bits, 1500, kind, seed=bits)
    queries = np.concatenate([MAKERS[kind](rng, 4, bits), items[next(iter(items))][0][None]])
    for k in (1, 8, 100, 256, 2000):  # 2000 > n: every item, the probe must exhaust all radii
        assert_same(index, queries, k, items=items)
    assert_same(index, queries, 50, radius=bits // 4, items=items)
    assert_same(index, queries, 2000, radius=bits // 8, items=items)
    for label in (-1, 2, 7):
        assert_same(index, queries, 20, label=label, items=items)
    assert_same(index, queries, 30, radius=bits // 3, label=1, items=items)
    assert index._planner.tables is not None and index._planner.tables.n == len(items)


def test_huge_tie_group_is_cut_by_id_like_the_scan() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    codes = np.repeat(random_codes(rng, 1, 64), n, axis=0)
    codes[:5, 3] ^= 0x10
    index = HammingIndex(64)
    index.put(np.arange(n), shuffled_ids(rng, n), codes, np.zeros(n, np.int32))
    for k in (1, 7, 300):
        assert_same(index, codes[:1], k)
        assert_same(index, codes[10:11], k)


def test_writes_after_the_build_are_found_through_the_dirty_log() -> None:
    """Moves, slot reuse with new codes and removes leave the tables stale; results stay exact."""
    bits = 64
    index, items, _ = build(bits, 3000, "trained", seed=11)
    index.build_multi_index()
    ids = list(items)
    queries = trained_like(np.random.default_rng(11), 6, bits)  # same centres as the data
    gone = ids[::4]
    index.remove(gone)
    for i in gone:
        del items[i]
    # New ids in the freed slots of removed ones, with codes equal to the queries: they must come first.
    freed = np.arange(10_000, 10_006)
    fresh = [f"new-{j}" for j in range(6)]
    index.put(freed, fresh, queries, np.zeros(6, np.int32))
    items.update({i: (c, 0) for i, c in zip(fresh, queries, strict=True)})
    # An existing id moves to a new slot with a code equal to query 0.
    moved = ids[1]
    index.put(np.array([20_000]), [moved], queries[:1], np.array([1], np.int32))
    items[moved] = (queries[0], 1)
    # A stored slot is given to another id (as the store does after a delete and reuse).
    slot_of_2 = index._slot_of[ids[2]]
    index.put(np.array([slot_of_2]), ["taker"], queries[1:2], np.array([2], np.int32))
    del items[ids[2]]
    items["taker"] = (queries[1], 2)
    assert index._planner.dirty().shape[0] > 0
    for k in (1, 10, 100):
        assert_same(index, queries, k, items=items)
    assert_same(index, queries, 40, label=0, items=items)
    index.build_multi_index()  # folding the writes in changes nothing either
    assert index._planner.dirty().shape[0] == 0
    for k in (1, 10, 100):
        assert_same(index, queries, k, items=items)


def test_plan_widths_cover_the_bits_with_small_tables() -> None:
    for bits in (8, 12, 48, 64, 100, 255, 256):
        for n in (10, 10**3, 10**6, 10**7, 10**9):
            widths = mih.plan_widths(bits, n)
            assert widths.sum() == bits
            assert widths.max() <= mih.MAX_WIDTH
            assert widths.max() - widths.min() <= 1
    assert mih.plan_widths(64, 10**7).tolist() == [22, 21, 21]
