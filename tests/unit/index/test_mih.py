"""Multi-index hashing returns exactly what the linear scan returns: same ids, same order.

Checked on random and clustered codes, for every search mode, after writes that leave the
tables stale (moves, slot reuse, removes), and in auto mode (tables built in the background,
probes that give up and fall back to the scan).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from support.codes import clustered_codes, random_codes, reference, shuffled_ids

from orbithash.index import hamming, mih
from orbithash.index.hamming import HammingIndex


def trained_like(rng: np.random.Generator, n: int, bits: int, classes: int = 5, flip: float = 0.08) -> np.ndarray:
    """Codes like a trained model's: a centre code per class, each bit flipped with probability ``flip``."""
    centres = rng.integers(0, 2, (classes, bits), dtype=np.uint8)
    signs = centres[rng.integers(0, classes, n)] ^ (rng.random((n, bits)) < flip)
    return np.packbits(signs.astype(np.uint8), axis=1)


MAKERS = {"random": random_codes, "clustered": clustered_codes, "trained": trained_like}


def build(bits: int, n: int, kind: str, seed: int) -> tuple[HammingIndex, dict, np.random.Generator]:
    rng = np.random.default_rng(seed)
    codes = MAKERS[kind](rng, n, bits)
    ids = shuffled_ids(rng, n)
    labels = rng.integers(-1, 3, n).astype(np.int32)
    index = HammingIndex(bits, threads=2)
    index.put(rng.permutation(n + 50)[:n], ids, codes, labels)
    items = {i: (c, int(lab)) for i, c, lab in zip(ids, codes, labels, strict=True)}
    return index, items, rng


def assert_same(index: HammingIndex, queries: np.ndarray, k: int, radius: int | None = None,
                label: int | None = None, items: dict | None = None) -> None:
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
    assert index._mih is not None and index._mih.tables.n == len(items)


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
    assert index._dirty(index._mih).shape[0] > 0
    for k in (1, 10, 100):
        assert_same(index, queries, k, items=items)
    assert_same(index, queries, 40, label=0, items=items)
    index.build_multi_index()  # folding the writes in changes nothing either
    assert index._dirty(index._mih).shape[0] == 0
    for k in (1, 10, 100):
        assert_same(index, queries, k, items=items)


def test_clear_drops_the_tables() -> None:
    index, _, rng = build(64, 500, "random", seed=1)
    index.build_multi_index()
    index.clear()
    assert index._mih is None
    assert index.search(random_codes(rng, 2, 64), 5, strategy="mih") == [[], []]


def test_auto_builds_in_the_background_and_uses_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hamming, "MIH_MIN_ITEMS", 1000)
    monkeypatch.setattr(hamming, "_MIH_BUDGET_DIVISOR", 1)  # a small shard: let probes run to the end
    index, _, _ = build(64, 20_000, "trained", seed=5)
    queries = trained_like(np.random.default_rng(5), 8, 64)
    expect = index.search(queries, 10, strategy="scan")
    assert index.search(queries, 10) == expect  # starts the build, scans meanwhile
    deadline = time.monotonic() + 60
    while index._mih is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert index._mih is not None
    calls: list[int] = []
    real = mih.probe_many

    def spy(*args):  # type: ignore[no-untyped-def]
        calls.append(args[3].shape[0])
        return real(*args)

    monkeypatch.setattr(mih, "probe_many", spy)
    assert index.search(queries, 10) == expect
    assert index.search(queries[:1], 10) == expect[:1]
    assert sum(calls) == 9  # every query went through the tables
    assert index._mih_skip == 0
    assert index.search(queries, 10, label=1) == index.search(queries, 10, label=1, strategy="scan")


def test_auto_falls_back_to_the_scan_when_a_probe_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hamming, "MIH_MIN_ITEMS", 1000)
    monkeypatch.setattr(hamming, "_MIH_BUDGET_DIVISOR", 10**9)  # budget: 1024 units of work
    index, _, rng = build(64, 30_000, "random", seed=8)
    index.build_multi_index()
    queries = random_codes(rng, 5, 64)
    expect = index.search(queries, 200, strategy="scan")
    assert index.search(queries, 200) == expect  # uniform codes, large k: every probe gives up
    assert index._mih_skip > 0  # and auto mode now scans for a while before trying again
    assert index.search(queries, 200) == expect


def test_plan_widths_cover_the_bits_with_small_tables() -> None:
    for bits in (8, 12, 48, 64, 100, 255, 256):
        for n in (10, 10**3, 10**6, 10**7, 10**9):
            widths = mih.plan_widths(bits, n)
            assert widths.sum() == bits
            assert widths.max() <= mih.MAX_WIDTH
            assert widths.max() - widths.min() <= 1
    assert mih.plan_widths(64, 10**7).tolist() == [22, 21, 21]
