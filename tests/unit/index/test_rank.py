"""The single-query fast path (scan and rank in one compiled call) and ``IdTable.ranked``, against
brute force: every code length the scan unrolls (1-4 uint64 words), and ids whose order needs
more than the 8-byte keys the ranking sorts by."""

from __future__ import annotations

import numpy as np
import pytest
from support.codes import filled_index, random_codes, reference

from orbithash.index import HammingIndex
from orbithash.index.ids import IdTable, encode_ids, split_ids


@pytest.mark.parametrize("bits", [64, 100, 128, 192, 256])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_one_query_equals_brute_force_and_the_batch(bits: int, kind: str) -> None:
    """1 200 items span three scan blocks; removed items leave dead slots inside them."""
    index, items, rng = filled_index(bits, 1200, kind, seed=bits, capacity=16)
    gone = list(items)[::7]
    index.remove(gone)
    for item_id in gone:
        del items[item_id]
    queries = np.concatenate([random_codes(rng, 3, bits), items[next(iter(items))][0][None]])
    for k in (1, 10, 100, 2000):
        batch = index.search(queries, k)
        for r, q in enumerate(queries):
            one = index.search(q[None], k)[0]
            assert one == reference(items, q, bits, k) == batch[r], (bits, kind, k)
    q = queries[:1]
    assert index.search(q, 50, label=1)[0] == reference(items, q[0], bits, 50, label=1)
    assert index.search(q, 50, max_distance=bits // 3)[0] == reference(items, q[0], bits, 50, max_distance=bits // 3)


def ranked_by_python(ids: list[str], dist: list[int], k: int) -> list[tuple[str, int]]:
    return sorted(zip(ids, dist, strict=True), key=lambda r: (r[1], r[0]))[:k]


@pytest.mark.parametrize("family", ["long shared prefix", "prefixes of each other", "not ascii", "two families"])
def test_ranked_orders_by_distance_then_id_as_python_does(family: str) -> None:
    """Ids equal in their first bytes after the common prefix fall back to a full comparison."""
    rng = np.random.default_rng(3)
    n = 3000
    if family == "long shared prefix":
        ids = [f"item-{v:012d}" for v in rng.permutation(10 * n)[:n].tolist()]
    elif family == "prefixes of each other":
        ids = [format(int(v), "b") for v in rng.permutation(n) + 1]  # "1", "10", "101", ...
    elif family == "not ascii":
        ids = [f"é{v}€" if v % 2 else f"z{v}" for v in rng.permutation(n).tolist()]
    else:  # no common prefix, but 7 equal bytes after it within each family: the merge sort path
        ids = [("a-" if v % 2 else "b-") + "0" * 10 + str(v) for v in rng.permutation(n).tolist()]
    table = IdTable(n)
    table.put(np.arange(n, dtype=np.int64), *encode_ids(ids), np.zeros(n, np.uint8))
    slots = rng.permutation(n).astype(np.int64)
    for spread in (1, 3, 40):  # one huge tie group, a few groups, many small ones
        dist = rng.integers(0, spread, n).astype(np.int32)
        for k in (1, 7, 100, n + 5):
            got_ids, got_slots, got_dist = table.ranked(slots, dist, k)
            want = ranked_by_python([ids[s] for s in slots.tolist()], dist.tolist(), k)
            assert list(zip(got_ids, got_dist.tolist(), strict=True)) == want, (family, spread, k)
            assert [ids[s] for s in got_slots.tolist()] == got_ids


def test_ranked_and_split_of_nothing() -> None:
    table = IdTable(4)
    ids, slots, dist = table.ranked(np.empty(0, np.int64), np.empty(0, np.int32), 5)
    assert ids == [] and slots.shape == (0,) and dist.shape == (0,)
    assert split_ids(np.empty(0, np.uint8), True) == []


def test_a_one_query_search_with_no_live_item_is_empty() -> None:
    index = HammingIndex(128)
    code = np.zeros((1, 16), np.uint8)
    index.put(np.array([0]), ["a"], code, np.zeros(1, np.int32))
    index.remove(["a"])
    assert index.search(code, 3) == [[]]
    assert index.search(code, 3, label=5) == [[]]
