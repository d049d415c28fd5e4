"""The scan kernel (``scan_range``, ``_scan_many``) against a brute-force numpy reference.

Exactly every eligible slot (live, of the label when filtered, within the threshold) whose
distance is <= the k-th smallest eligible distance, for 1 to 4 words per code, ranges that start
and end anywhere (odd lengths, block edges), and many ties (codes from a tiny alphabet).
"""

from __future__ import annotations

import numpy as np
import pytest

from orbithash.index import scan


def words_of(packed: np.ndarray, bits: int) -> np.ndarray:
    """(n, bytes) packed codes -> (n, words) uint64, zero-padded as the index stores them."""
    words = (bits + 63) // 64
    padded = np.zeros((packed.shape[0], words * 8), np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64)


def make_codes(rng: np.random.Generator, n: int, bits: int, alphabet: int | None) -> np.ndarray:
    """Uniform packed codes, or ones drawn from ``alphabet`` distinct codes (huge tie groups)."""
    nbytes = (bits + 7) // 8
    pool = np.packbits(rng.integers(0, 2, (alphabet or n, bits), dtype=np.uint8), axis=1)
    assert pool.shape[1] == nbytes
    return pool if alphabet is None else pool[rng.integers(0, alphabet, n)]


def reference(codes: np.ndarray, q: np.ndarray, live: np.ndarray, labels: np.ndarray, label: int, use_label: bool,
              k: int, threshold: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(slots, distances) sorted by slot: the eligible slots in [start, stop) at distance <= the k-th smallest."""
    dist = np.unpackbits(codes[start:stop].view(np.uint8) ^ q.view(np.uint8), axis=1).sum(axis=1)
    ok = (live[start:stop] != 0) & (dist <= threshold)
    if use_label:
        ok &= labels[start:stop] == label
    eligible = np.sort(dist[ok])
    if eligible.shape[0] >= k:
        ok &= dist <= eligible[k - 1]
    slots = np.flatnonzero(ok)
    return slots + start, dist[slots].astype(np.int32)


def by_slot(slots: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(slots, kind="stable")
    return slots[order], dist[order]


CASES = [  # (bits, n, alphabet)
    (48, 1537, None), (48, 700, 3),
    (64, 2049, None), (64, 1100, 2),
    (128, 1025, None), (128, 900, 4),
    (200, 1031, None), (200, 800, 3),
    (256, 1536, None), (256, 1001, 2),
]


@pytest.mark.parametrize(("bits", "n", "alphabet"), CASES)
def test_scan_range_equals_brute_force(bits: int, n: int, alphabet: int | None) -> None:
    rng = np.random.default_rng(bits * 1000 + n)
    codes = words_of(make_codes(rng, n, bits, alphabet), bits)
    flat = codes.reshape(-1)
    words = codes.shape[1]
    live = (rng.random(n) > 0.2).astype(np.uint8)  # a fifth of the slots dead
    labels = rng.integers(0, 3, n).astype(np.int32)
    queries = words_of(make_codes(rng, 3, bits, None), bits)
    queries = np.concatenate([queries, codes[rng.integers(0, n, 2)]])  # exact matches too
    ranges = [(0, n), (1, n - 1), (3, 4), (5, 5), (n // 3, min(n, n // 3 + 513)), (0, 1)]
    checked = 0
    for q in queries:
        for k in (1, 2, 10, 100, n + 5):
            for threshold in (bits, bits // 2, bits // 3, 0):
                for label, use_label in ((0, False), (1, True), (7, True)):
                    for start, stop in ranges:
                        got = by_slot(*scan.scan_range(flat, words, q, live, labels, label, use_label, k, threshold,
                                                       start, stop))
                        want = reference(codes, q, live, labels, label, use_label, k, threshold, start, stop)
                        assert got[0].dtype == np.int64 and got[1].dtype == np.int32
                        np.testing.assert_array_equal(got[0], want[0], err_msg=f"{k=} {threshold=} {label=} {start=}")
                        np.testing.assert_array_equal(got[1], want[1], err_msg=f"{k=} {threshold=} {label=} {start=}")
                        checked += want[0].shape[0]
    assert checked > 0


@pytest.mark.parametrize("bits", [64, 128, 256])
def test_huge_tie_groups_grow_the_buffer(bits: int) -> None:
    """Thousands of slots at the cut (more than the candidate buffer holds): all are returned."""
    rng = np.random.default_rng(bits)
    n = 6001
    codes = words_of(make_codes(rng, n, bits, 2), bits)
    live = np.ones(n, np.uint8)
    live[::7] = 0
    labels = np.zeros(n, np.int32)
    q = codes[0]
    for k in (1, 50, 3000):
        got = by_slot(*scan.scan_range(codes.reshape(-1), codes.shape[1], q, live, labels, 0, False, k, bits, 0, n))
        want = reference(codes, q, live, labels, 0, False, k, bits, 0, n)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert want[0].shape[0] > 1000


@pytest.mark.parametrize("bits", [48, 256])
def test_scan_many_matches_scan_range_per_query(bits: int) -> None:
    rng = np.random.default_rng(3)
    n = 999
    codes = words_of(make_codes(rng, n, bits, 5), bits)
    flat, words = codes.reshape(-1), codes.shape[1]
    live = (rng.random(n) > 0.1).astype(np.uint8)
    labels = rng.integers(0, 2, n).astype(np.int32)
    queries = words_of(make_codes(rng, 4, bits, None), bits)
    offsets, slots, dist = scan._scan_many(flat, words, queries, live, labels, 1, True, 20, bits, 10, n - 10)
    for r, q in enumerate(queries):
        got = by_slot(slots[offsets[r]:offsets[r + 1]], dist[offsets[r]:offsets[r + 1]])
        want = reference(codes, q, live, labels, 1, True, 20, bits, 10, n - 10)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
