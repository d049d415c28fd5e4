"""The exact linear scan: every slot's distance, without ever sorting N of them.

The kernel scans blocks of slots, computing distances vectorised (LLVM lowers ``llvm.ctpop`` to
VPOPCNTQ with AVX-512, to a PSHUFB nibble table with AVX2), skips a block whose minimum exceeds
the running threshold, and appends the slots within it to a small candidate buffer; when the
buffer holds 2k candidates a histogram over the distances (at most 257 bins) yields the k-th
smallest, which becomes the new threshold.
The result is every slot with distance <= the final k-th smallest distance: few candidates,
which the index orders by (distance, id) so ties are deterministic.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from orbithash.index.kernels import concat, popcount, tighten
from orbithash.index.pool import run_split
from orbithash.index.view import Candidates, SlotView, TopK

_BLOCK = 512  # slots per block: small enough to skip often, large enough to vectorise well
_EXCLUDED = np.int32(1 << 12)  # added to the distance of dead/filtered slots: above any threshold
# Below this many uint64 words scanned per call, handing work to another thread costs more than
# it saves (a hand-off is ~50 us; a scan does ~3 words per ns).
_SPLIT_WORDS = 1 << 18


@njit(cache=True, nogil=True, inline="always")
def _block_distances(codes, words, q, live, labels, label, use_label, m, out):
    """Distances of m consecutive slots into ``out``; dead or filtered slots get +_EXCLUDED.

    The live flag is folded into the popcount loop itself: a separate pass over ``out`` costs
    more than the flag at 128 and 256 bits, where the scan is bound by memory bandwidth.
    """
    if words == 1:
        q0 = q[0]
        for j in range(m):
            out[j] = np.int32(popcount(codes[j] ^ q0)) | ((np.int32(live[j]) ^ 1) << 12)
    elif words == 2:
        q0 = q[0]
        q1 = q[1]
        for j in range(m):
            out[j] = (np.int32(popcount(codes[2 * j] ^ q0) + popcount(codes[2 * j + 1] ^ q1))
                      | ((np.int32(live[j]) ^ 1) << 12))
    elif words == 3:
        q0 = q[0]
        q1 = q[1]
        q2 = q[2]
        for j in range(m):
            out[j] = (np.int32(popcount(codes[3 * j] ^ q0) + popcount(codes[3 * j + 1] ^ q1)
                               + popcount(codes[3 * j + 2] ^ q2)) | ((np.int32(live[j]) ^ 1) << 12))
    else:
        q0 = q[0]
        q1 = q[1]
        q2 = q[2]
        q3 = q[3]
        for j in range(m):
            out[j] = (np.int32(popcount(codes[4 * j] ^ q0) + popcount(codes[4 * j + 1] ^ q1)
                               + popcount(codes[4 * j + 2] ^ q2) + popcount(codes[4 * j + 3] ^ q3))
                      | ((np.int32(live[j]) ^ 1) << 12))
    if use_label:
        for j in range(m):
            if labels[j] != label:
                out[j] |= _EXCLUDED


@njit(cache=True, nogil=True)
def _fill(codes, words, q, live, labels, label, use_label, threshold, i, stop,
          cand_slots, cand_dist, n, limit, dist):
    """Scan from slot i until the buffer holds ``limit`` candidates or the range ends.

    Kept free of array reassignment: numba then keeps the hot loop free of reference counting
    (4x faster here). A block is skipped unless its vectorised minimum reaches the threshold.
    """
    cap = cand_slots.shape[0]
    while i < stop:
        m = min(_BLOCK, stop - i)
        if n >= limit or n + m > cap:
            return i, n
        _block_distances(codes[i * words:(i + m) * words], words, q, live[i:i + m], labels[i:i + m],
                         label, use_label, m, dist)
        lowest = _EXCLUDED
        for j in range(m):
            lowest = min(lowest, dist[j])
        if lowest <= threshold:  # rare once the threshold is tight; the branch predicts well
            # On a small shard nearly every block gets here: a vectorised compare makes a bit mask
            # per 64 slots, and only the set bits are visited (no branch per slot to mispredict).
            for g in range(0, m, 64):
                mask = np.uint64(0)
                for j in range(g, min(g + 64, m)):
                    mask |= np.uint64(dist[j] <= threshold) << np.uint64(j - g)
                while mask != 0:
                    low = mask & (~mask + np.uint64(1))
                    j = g + np.int64(popcount(low - np.uint64(1)))  # the lowest set bit's index
                    cand_slots[n] = i + j
                    cand_dist[n] = dist[j]
                    n += 1
                    mask ^= low
        i += m
    return i, n


@njit(cache=True, nogil=True)
def scan_range(codes, words, q, live, labels, label, use_label, k, threshold, bits, start, stop):
    """Every slot in [start, stop) whose distance is <= the k-th smallest there (and <= threshold)."""
    limit = max(min(2 * k, stop - start), 1)
    cand_slots = np.empty(limit + _BLOCK, np.int64)
    cand_dist = np.empty(limit + _BLOCK, np.int32)
    dist = np.empty(_BLOCK, np.int32)
    n = 0
    i = start
    while True:
        i, n = _fill(codes, words, q, live, labels, label, use_label, threshold, i, stop,
                     cand_slots, cand_dist, n, limit, dist)
        n, threshold = tighten(cand_slots, cand_dist, n, k, threshold, bits)
        if i >= stop:
            break
        if n >= limit:  # ties at the threshold fill the buffer: grow it geometrically
            limit = 2 * n + k
        if limit + _BLOCK > cand_slots.shape[0]:
            grown_slots = np.empty(2 * (limit + _BLOCK), np.int64)
            grown_slots[:n] = cand_slots[:n]
            cand_slots = grown_slots
            grown_dist = np.empty(2 * (limit + _BLOCK), np.int32)
            grown_dist[:n] = cand_dist[:n]
            cand_dist = grown_dist
    return cand_slots[:n].copy(), cand_dist[:n].copy()


@njit(cache=True, nogil=True)
def _scan_many(codes, words, queries, live, labels, label, use_label, k, threshold, bits, start, stop):
    """scan_range for each query row; results concatenated with offsets (numba returns no ragged lists)."""
    parts_slots = []
    parts_dist = []
    for r in range(queries.shape[0]):
        s, d = scan_range(codes, words, queries[r], live, labels, label, use_label, k, threshold, bits,
                          start, stop)
        parts_slots.append(s)
        parts_dist.append(d)
    return concat(parts_slots, parts_dist)


def scan_threads(view: SlotView, nq: int, threads: int) -> int:
    """How many threads scanning ``nq`` queries over ``view`` should use: one below _SPLIT_WORDS."""
    return 1 if nq * view.end * view.words < _SPLIT_WORDS else min(threads, nq) if nq > 1 else threads


def scan_candidates(view: SlotView, queries: np.ndarray, top: TopK, threads: int) -> list[Candidates]:
    """Each query's candidates over every slot of ``view``; ``queries`` are (n, words) uint64.

    The work is split over up to ``threads`` threads: by query for batches, by slot range for
    one big query (whose per-range candidates together still hold every slot <= the k-th smallest).
    """
    nq, end, words = queries.shape[0], view.end, view.words
    codes = view.codes.reshape(-1)
    rest = (view.live, view.labels, *top.filter_args(), view.bits)
    threads = scan_threads(view, nq, threads)
    if nq > 1:  # each thread takes a run of queries over all slots
        jobs = [(codes, words, queries[nq * t // threads:nq * (t + 1) // threads], *rest, 0, end)
                for t in range(threads)]
    else:  # each thread takes a range of slots for the one query
        jobs = [(codes, words, queries, *rest, end * t // threads, end * (t + 1) // threads) for t in range(threads)]
    parts = run_split(_scan_many, jobs)
    if nq == 1 and len(parts) > 1:
        return [(np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))]
    return [(slots[a:b], dist[a:b]) for offsets, slots, dist in parts for a, b in itertools.pairwise(offsets.tolist())]
