"""The one-query fast path of ``search_ranked`` (``HammingIndex._search_plain``): the same answers
and the same errors as the general path, whatever the codes, ids, dead slots and query layout."""

from __future__ import annotations

import numpy as np
import pytest
from support.codes import reference

from orbithash import InvalidInput
from orbithash.index import HammingIndex, hamming, scan
from orbithash.index.ids import IdTable, encode_ids


def tie_heavy_index(bits: int, n: int, seed: int) -> tuple[HammingIndex, dict, np.random.Generator]:
    """Codes from a tiny alphabet (huge tie groups), ids ASCII and not (order by code point, not
    slot), a few slots dead: removed, or left empty by sparse slots."""
    rng = np.random.default_rng(seed)
    width = (bits + 7) // 8
    alphabet = rng.integers(0, 256, (4, width), dtype=np.uint8)
    if bits % 8:
        alphabet[:, -1] &= np.uint8((0xFF << (8 - bits % 8)) & 0xFF)
    codes = alphabet[rng.integers(0, 4, n)]
    names = ["é", "z", "Ω", "a", "日本", "ä", "b"]
    ids = [f"{names[v % 7]}-{v}" if v % 3 else f"item-{v}" for v in rng.permutation(n * 5)[:n].tolist()]
    labels = rng.integers(-1, 3, n).astype(np.int32)
    index = HammingIndex(bits, capacity=8, threads=1)
    index.put(rng.permutation(n + 40)[:n], ids, codes, labels)
    gone = ids[::9]
    assert sorted(index.remove(gone)) == sorted(gone)
    items = {i: (c, int(lab)) for i, c, lab in zip(ids, codes, labels, strict=True) if i not in set(gone)}
    return index, items, rng


@pytest.mark.parametrize("bits", [8, 48, 64, 100, 128, 200, 256])
def test_fast_path_equals_general_path_and_brute_force(bits: int) -> None:
    index, items, rng = tie_heavy_index(bits, 700, bits)
    width = (bits + 7) // 8
    some = list(items.values())
    queries = [some[0][0], some[5][0], rng.integers(0, 256, width, dtype=np.uint8)]
    if bits % 8:
        queries[2][-1] &= np.uint8((0xFF << (8 - bits % 8)) & 0xFF)
    for q in queries:
        for k in (1, 3, 50, 640, 2000):
            assert index._search_plain(q[None], k) is not None  # the fast path answers these
            fast = index.search_ranked(q[None], k)
            general = index.search_ranked(q[None], k, strategy="scan")  # never the fast path
            assert [r.hits() for r in fast] == [r.hits() for r in general] == [reference(items, q, bits, k)]
            assert fast[0].ids() == general[0].ids()
            np.testing.assert_array_equal(fast[0].blob, general[0].blob)
            assert fast[0].ascii == general[0].ascii
            assert fast[0].distances.dtype == np.int32 and fast[0].labels.dtype == np.int32


def test_query_layouts_and_bytes_give_the_same_answer() -> None:
    index, items, rng = tie_heavy_index(64, 300, 1)
    q = rng.integers(0, 256, (1, 8), dtype=np.uint8)
    want = reference(items, q[0], 64, 20)
    wide = np.zeros((1, 16), np.uint8)
    wide[:, ::2] = q
    readonly = q.copy()
    readonly.flags.writeable = False
    for layout in (q, wide[:, ::2], readonly, [q[0].tobytes()], np.asfortranarray(q)):
        assert index.search(layout, 20) == [want]


def test_fast_path_validates_like_the_general_path() -> None:
    index, _, _ = tie_heavy_index(60, 50, 2)
    good = np.zeros((1, 8), np.uint8)
    bad_padding = good.copy()
    bad_padding[0, -1] = 1
    for queries, k in ((np.zeros((1, 7), np.uint8), 5), (np.zeros((1, 8), np.int64), 5), (bad_padding, 5),
                       (good, 0), (good, True), (good, 1.5), (good, hamming.MAX_K + 1)):
        with pytest.raises(InvalidInput) as fast:
            index.search_ranked(queries, k)
        with pytest.raises(InvalidInput) as general:
            index.search_ranked(queries, k, strategy="scan")
        assert str(fast.value) == str(general.value)


def test_empty_shard_and_batches() -> None:
    index = HammingIndex(64, threads=1)
    q = np.zeros((1, 8), np.uint8)
    assert [r.count for r in index.search_ranked(q, 5)] == [0]
    index.put(np.array([3]), ["a"], q, np.array([1], np.int32))
    index.remove(["a"])
    assert index.search(q, 5) == [[]]  # only a dead slot
    index.put(np.array([0, 1]), ["b", "c"], np.array([[1] + [0] * 7, [0] * 8], np.uint8), np.array([2, 3], np.int32))
    assert index._search_plain(np.zeros((2, 8), np.uint8), 1) is None  # batches take the general path
    assert index.search(np.zeros((2, 8), np.uint8), 1) == [[("c", 0, 3)], [("c", 0, 3)]]
    assert index.search_ranked(np.zeros((0, 8), np.uint8), 1) == []


def test_large_or_split_shards_take_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    index, items, rng = tie_heavy_index(64, 400, 3)
    q = rng.integers(0, 256, (1, 8), dtype=np.uint8)
    want = [reference(items, q[0], 64, 30)]
    index._threads = 2
    monkeypatch.setattr(scan, "_SPLIT_WORDS", 1)  # one query would be split over threads
    assert index._search_plain(q, 30) is None
    assert index.search(q, 30) == want
    monkeypatch.setattr(scan, "_SPLIT_WORDS", 1 << 18)
    monkeypatch.setattr(hamming.planner, "MIH_MIN_ITEMS", 10)  # the planner may probe
    assert index._search_plain(q, 30) is None
    assert index.search(q, 30) == want


@pytest.mark.parametrize("seed", range(4))
def test_rank_orders_ties_by_id_bytes(seed: int) -> None:
    """``ids.rank`` straight: ids sharing long prefixes (past the 8 key bytes), prefixes of one
    another, non-ASCII, in groups of many sizes at each distance."""
    rng = np.random.default_rng(seed)
    n = 600
    stems = ["item-00000000000", "item-0000000000", "é", "", "zz", "item-"]
    ids = list(dict.fromkeys(f"{stems[v % 6]}{v % 97}" if v % 5 else f"{stems[v % 6]}" + "x" * (v % 13)
                             for v in rng.integers(0, 5000, 3 * n).tolist() if f"{stems[v % 6]}{v % 97}"))[:n]
    ids = [i for i in ids if i]
    table = IdTable(len(ids))
    keys, ends = encode_ids(ids)
    table.put(np.arange(len(ids)), keys, ends, np.zeros(len(ids), np.uint8))
    slots = rng.permutation(len(ids)).astype(np.int64)
    dist = rng.choice([0, 3, 3, 3, 9, 9, 20], len(ids)).astype(np.int32)
    for k in (1, 17, 100, len(ids)):
        got_ids, got_slots, got_dist = table.ranked(slots, dist, k)
        want = sorted(zip(dist.tolist(), [ids[s] for s in slots.tolist()], slots.tolist(), strict=True))[:k]
        assert got_ids == [w[1] for w in want]
        assert got_slots.tolist() == [w[2] for w in want] and got_dist.tolist() == [w[0] for w in want]
