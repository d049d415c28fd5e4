"""HammingIndex (through the linear scan) against a brute-force numpy reference (unpackbits),
on random and clustered codes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support.codes import Items, clustered_codes, filled_index, random_codes, reference, shuffled_ids

from orbithash import InvalidInput
from orbithash.index import HammingIndex, scan

BITS = [8, 12, 24, 48, 64, 100, 256]


def fill(bits: int, n: int, kind: str, seed: int = 0) -> tuple[HammingIndex, Items, np.random.Generator]:
    return filled_index(bits, n, kind, seed, capacity=16)


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("bits", BITS)
def test_search_equals_brute_force(bits: int, kind: str) -> None:
    n = 400
    index, items, rng = fill(bits, n, kind, seed=bits)
    queries = np.concatenate([random_codes(rng, 3, bits), items[next(iter(items))][0][None]])
    for k in (1, 7, 50, n + 25):  # k larger than n returns every item
        got = index.search(queries, k)
        assert got == [reference(items, q, bits, k) for q in queries], (bits, kind, k)
    assert len(index.search(queries[:1], n + 25)[0]) == n


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("bits", BITS)
def test_radius_and_label_filters(bits: int, kind: str) -> None:
    index, items, rng = fill(bits, 300, kind, seed=100 + bits)
    queries = random_codes(rng, 2, bits)
    radius = bits // 3
    for q, got in zip(queries, index.search(queries, 20, max_distance=radius), strict=True):
        assert got == reference(items, q, bits, 20, max_distance=radius)
        assert all(d <= radius for _, d, _ in got)
    for label in (-1, 0, 2, 99):
        for q, got in zip(queries, index.search(queries, 15, label=label), strict=True):
            assert got == reference(items, q, bits, 15, label=label)
            assert all(lab == label for _, _, lab in got)
    combined = index.search(queries, 1000, max_distance=radius + 2, label=1)
    assert combined == [reference(items, q, bits, 1000, max_distance=radius + 2, label=1) for q in queries]
    assert index.search(queries, 5, max_distance=0) == [reference(items, q, bits, 5, 0) for q in queries]


def test_ties_are_broken_by_id_not_by_slot() -> None:
    index = HammingIndex(64)
    code = np.full((1, 8), 0xAB, np.uint8)
    ids = ["m", "b", "z", "a", "k"]
    index.put(np.arange(5), ids, np.repeat(code, 5, axis=0), np.zeros(5, np.int32))
    assert [i for i, _, _ in index.search(code, 3)[0]] == ["a", "b", "k"]
    assert [i for i, _, _ in index.search(code, 10)[0]] == sorted(ids)


def test_huge_tie_group_at_the_cut_is_narrowed_exactly() -> None:
    """Thousands of equal codes: the kernel returns all of them, ranking keeps the k smallest ids."""
    rng = np.random.default_rng(5)
    n = 5000
    codes = np.repeat(random_codes(rng, 1, 48), n, axis=0)
    codes[:3, 0] ^= 0x80  # three items at distance 1 from the rest
    ids = shuffled_ids(rng, n)
    index = HammingIndex(48)
    index.put(np.arange(n), ids, codes, np.zeros(n, np.int32))
    got = index.search(codes[3:4], 12)[0]
    assert [d for _, d, _ in got] == [0] * 12
    assert [i for i, _, _ in got] == sorted(ids[3:])[:12]
    near = index.search(codes[:1], 5)[0]  # the three flipped items, then the two smallest others
    assert [(i, d) for i, d, _ in near] == [(i, 0) for i in sorted(ids[:3])] + [(i, 1) for i in sorted(ids[3:])[:2]]


def test_removed_items_are_never_returned() -> None:
    index, items, rng = fill(64, 200, "clustered", seed=7)
    gone = list(items)[::3]
    assert index.remove([*gone, "never-there"]) == gone
    assert index.remove(gone) == []
    for i in gone:
        del items[i]
    assert len(index) == len(items)
    queries = random_codes(rng, 4, 64)
    got = index.search(queries, 500)
    assert got == [reference(items, q, 64, 500) for q in queries]
    assert not {i for hits in got for i, _, _ in hits} & set(gone)
    assert index.get(gone[0]) is None


def test_moved_id_frees_its_old_slot_and_slot_takeover_drops_the_old_id() -> None:
    index = HammingIndex(12)
    a, b, c = np.array([[0xFF, 0xF0]], np.uint8), np.array([[0x00, 0x00]], np.uint8), np.array([[0x0F, 0x00]], np.uint8)
    index.put(np.array([3]), ["x"], a, np.array([1]))
    index.put(np.array([7]), ["x"], b, np.array([2]))  # x moves: slot 3 must not answer any more
    assert index.get("x") == (b.tobytes(), 2)
    assert index.search(a, 10) == [[("x", 12, 2)]]
    index.put(np.array([7]), ["y"], c, np.array([3]))  # the store gave slot 7 to y: x is gone
    assert "x" not in index and len(index) == 1
    assert index.search(c, 10) == [[("y", 0, 3)]]


def test_repeated_id_in_one_put_last_wins() -> None:
    index = HammingIndex(16)
    codes = np.array([[1, 0], [2, 0], [4, 0]], np.uint8)
    index.put(np.array([0, 1, 0]), ["p", "q", "p"], codes, np.array([5, 6, 7]))
    assert index.get("p") == (bytes([4, 0]), 7)
    assert len(index) == 2


def test_grows_from_tiny_capacity_to_far_slots() -> None:
    index = HammingIndex(24, capacity=1)
    rng = np.random.default_rng(2)
    codes = random_codes(rng, 3, 24)
    index.put(np.array([0, 5000, 70]), ["a", "b", "c"], codes, np.array([0, 1, 2]))
    assert index.capacity >= 5001
    assert sorted(i for i, _, _ in index.search(codes[:1], 5)[0]) == ["a", "b", "c"]
    assert index.get("b") == (codes[1].tobytes(), 1)


def test_empty_index_and_empty_batch() -> None:
    index = HammingIndex(64)
    q = np.zeros((2, 8), np.uint8)
    assert index.search(q, 3) == [[], []]
    assert index.search(np.zeros((0, 8), np.uint8), 3) == []
    assert len(index) == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bits", [64, 100])
def test_large_shard_batches_and_split_scans(bits: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enough slots for many threshold updates, buffer growth, block tails and thread splits."""
    monkeypatch.setattr(scan, "_SPLIT_WORDS", 1)  # force the slot-range split for one query
    rng = np.random.default_rng(bits + threads)
    n = 120_003
    codes = np.concatenate([random_codes(rng, n - 3000, bits), clustered_codes(rng, 3000, bits)])
    ids = [f"{v:07d}" for v in rng.permutation(n)]
    labels = rng.integers(0, 4, n).astype(np.int32)
    index = HammingIndex(bits, threads=threads)
    index.put(np.arange(n), ids, codes, labels)
    index.remove(ids[::5])
    live = np.ones(n, bool)
    live[::5] = False
    queries = np.concatenate([random_codes(rng, 5, bits), codes[-3:]])
    bit_table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    id_arr = np.array(ids)
    for k, radius, label in ((10, None, None), (300, None, 2), (2000, bits // 3, None)):
        got = index.search(queries, k, radius, label)
        for q, hits in zip(queries, got, strict=True):
            dist = bit_table[codes ^ q].sum(1)
            keep = live & (dist <= (bits if radius is None else radius))
            if label is not None:
                keep &= labels == label
            order = np.lexsort((id_arr[keep], dist[keep]))[:k]
            expect = list(zip(id_arr[keep][order].tolist(), dist[keep][order].tolist(),
                              labels[keep][order].tolist(), strict=True))
            assert hits == expect
        assert index.search(queries[:1], k, radius, label) == got[:1]  # single query path agrees


def test_get_returns_code_and_label() -> None:
    index = HammingIndex(100)
    code = np.packbits(np.arange(100) % 3 == 0)[None]
    index.put(np.array([4]), ["s"], code, np.array([9]))
    assert index.get("s") == (code.tobytes(), 9)
    assert index.get("t") is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInput):
        HammingIndex(7)
    with pytest.raises(InvalidInput):
        HammingIndex(257)
    index = HammingIndex(12)
    good = np.zeros((1, 2), np.uint8)
    with pytest.raises(InvalidInput, match="shape"):
        index.search(np.zeros((1, 3), np.uint8), 1)
    with pytest.raises(InvalidInput, match="padding"):
        index.search(np.array([[0, 0x01]], np.uint8), 1)  # bit 16 of a 12-bit code
    with pytest.raises(InvalidInput, match="padding"):
        index.put(np.array([0]), ["a"], np.array([[0, 0x08]], np.uint8), np.array([0]))
    with pytest.raises(InvalidInput, match="k must"):
        index.search(good, 0)
    with pytest.raises(InvalidInput, match="max_distance"):
        index.search(good, 1, max_distance=-1)
    with pytest.raises(InvalidInput):
        index.put(np.array([0, 1]), ["a"], np.zeros((2, 2), np.uint8), np.zeros(2))
    with pytest.raises(InvalidInput, match="slots"):
        index.put(np.array([-1]), ["a"], good, np.zeros(1, np.int32))
    # The rules of orbithash.codes hold here too: labels, ids, k.
    with pytest.raises(InvalidInput, match="labels"):
        index.put(np.array([0]), ["a"], good, np.array([-2]))
    with pytest.raises(InvalidInput, match="labels"):
        index.put(np.array([0]), ["a"], good, np.zeros(1))
    with pytest.raises(InvalidInput, match="id"):
        index.put(np.array([0]), [""], good, np.zeros(1, np.int32))
    with pytest.raises(InvalidInput, match="id"):
        index.put(np.array([0]), ["x" * 300], good, np.zeros(1, np.int32))
    with pytest.raises(InvalidInput, match="k must"):
        index.search(good, True)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="strategy"):
        index.search(good, 1, strategy="fast")  # type: ignore[arg-type]
    assert len(index) == 0


def test_searches_run_while_writes_go_on() -> None:
    """Readers and a writer (which grows the arrays) interleave without errors; the end state is exact."""
    index = HammingIndex(64, capacity=2)
    expected: set[str] = set()
    stop = threading.Event()
    errors: list[BaseException] = []
    code = np.zeros((1, 8), np.uint8)

    def writer() -> None:
        for i in range(3000):
            index.put(np.array([i]), [f"w{i}"], code, np.array([0]))
            expected.add(f"w{i}")
            if i % 3 == 0:
                expected.discard(f"w{i - 1}")
                index.remove([f"w{i - 1}"])
        stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                for i, d, _ in index.search(code, 50)[0]:
                    assert i.startswith("w") and d == 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(index) == len(expected) == 2001
    assert {i for i, _, _ in index.search(code, 5000)[0]} == expected


@pytest.mark.parametrize("strategy", ["scan", "mih"])
def test_concurrent_adds_and_searches_stay_consistent(strategy: str) -> None:
    """Writers add, move into reused slots and remove while readers search; every result is checked.

    An id's code never changes, so a hit's distance is checkable at any time. Items published
    as permanent (after their put returned, never removed) that lie strictly closer than the
    k-th hit must be in the result: a search that misses a write acknowledged before it began
    (e.g. stale MIH tables without the dirty log) fails here. A rebuild of the tables runs in
    the middle.
    """
    bits, n0 = 32, 3000
    rng = np.random.default_rng(21)
    queries = random_codes(rng, 4, bits)
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)

    def dists(codes: np.ndarray) -> np.ndarray:  # (n, 4): distance of each code to each query
        return table[codes[:, None, :] ^ queries[None, :, :]].sum(2)

    index = HammingIndex(bits, capacity=16, threads=2)
    base = random_codes(rng, n0, bits)
    base_ids = [f"p{i:05d}" for i in range(n0)]
    dist_of: dict[str, np.ndarray] = dict(zip(base_ids, dists(base), strict=True))
    index.put(np.arange(n0), base_ids, base, np.zeros(n0, np.int32))
    if strategy == "mih":
        index.build_multi_index()
    permanent: list[str] = list(base_ids)
    stop = threading.Event()
    errors: list[BaseException] = []
    checked = [0]

    def writer() -> None:
        wrng = np.random.default_rng(5)
        free: list[int] = []
        transient: list[str] = []
        next_slot = n0
        rebuild: threading.Thread | None = None
        try:
            for step in range(1200):
                code = random_codes(wrng, 1, bits)
                tid = f"t{step:05d}"
                dist_of[tid] = dists(code)[0]
                slot = free.pop() if free else next_slot
                next_slot += slot == next_slot
                index.put(np.array([slot]), [tid], code, np.zeros(1, np.int32))
                transient.append(tid)
                if step % 2:
                    old = transient.pop(0)
                    free.append(index._slot_of[old])
                    index.remove([old])
                if step % 3 == 0 and free:  # near a query, into a reused slot (stale in the tables)
                    near = queries[step % 4 : step % 4 + 1].copy()
                    near[0, wrng.integers(0, bits // 8)] ^= np.uint8(1 << int(wrng.integers(0, 8)))
                    pid = f"q{step:05d}"
                    dist_of[pid] = dists(near)[0]
                    index.put(np.array([free.pop()]), [pid], near, np.zeros(1, np.int32))
                    permanent.append(pid)
                if step % 40 == 0:  # let the readers interleave whatever the scheduler does
                    seen = checked[0]
                    deadline = time.monotonic() + 5
                    while checked[0] < seen + 2 and time.monotonic() < deadline and not stop.is_set():
                        time.sleep(0.001)
                if step == 600 and strategy == "mih":
                    rebuild = threading.Thread(target=index.build_multi_index)
                    rebuild.start()
            if rebuild is not None:
                rebuild.join(30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rrng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                known = len(permanent)
                qi, k = int(rrng.integers(0, 4)), int(rrng.choice([1, 5, 40]))
                hits = index.search(queries[qi : qi + 1], k, strategy=strategy)[0]  # type: ignore[arg-type]
                assert len(hits) == k
                assert hits == sorted(hits, key=lambda h: (h[1], h[0]))
                assert len({i for i, _, _ in hits}) == k
                assert all(d == dist_of[i][qi] for i, d, _ in hits)
                cut = hits[-1][1]
                required = {p for p in permanent[:known] if dist_of[p][qi] < cut}
                assert required <= {i for i, _, _ in hits}, (required - {i for i, _, _ in hits}, cut)
                checked[0] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert checked[0] > 40  # the writer waits for ~2 searches every 40 steps
    final = index.search(queries, 60, strategy="scan")
    assert index.search(queries, 60, strategy="mih") == final
