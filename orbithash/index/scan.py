"""The exact linear scan: every slot's distance, without ever sorting N of them.

Per slot the kernel XORs the code with the query, counts bits with scalar ``popcnt`` and compares
the sum with the running threshold; only a slot within it is checked for live and label and
appended to a small candidate buffer. After each block of slots a histogram of the candidates'
distances (at most 257 bins, kept up to date block by block) yields the k-th smallest so far,
which becomes the new threshold; candidates above it are dropped when the buffer fills and at
the end. The result is every slot with distance <= the final k-th smallest distance: few
candidates, which the index orders by (distance, id) so ties are deterministic.

Why scalar and one pass: codes are interleaved (slot j's words are adjacent), so popcounting
across slots with vectors needs shuffles to sum each slot's words, and with AVX2 (no vector
popcount) that PSHUFB-table code is no faster than ``popcnt`` per word even when hand-built. The
former scheme (a block's distances into a buffer, then a masked second pass where the block
minimum reached the threshold) paid for that slow vectorised loop and, as a threshold at the
k-th smallest often lies near a block's minimum, for the second pass too. Here live and label
are read only for slots within the threshold. One kernel per word count keeps the query words
in registers; two slots share one rarely taken branch, which halves the loop overhead. At 256
bits (4 words) a software prefetch a few KiB ahead keeps memory from stalling the loop when the
codes are not in cache.
"""

from __future__ import annotations

import itertools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from orbithash.index.kernels import concat, popcount
from orbithash.index.pool import run_split
from orbithash.index.view import Candidates, SlotView, TopK

# 256-bit codes: software prefetch this many words (4 KiB) ahead. When the codes do not sit in
# cache the hardware prefetcher alone leaves the 4-word loop waiting on memory; for fewer words
# the loop is slower per byte and an explicit prefetch only adds instructions.
_AHEAD = 512
_BLOCK = 512  # slots scanned between threshold updates and checks that the buffer has room for all of them
# Below this many uint64 words scanned per call, handing work to another thread costs more than
# it saves (a hand-off is ~50 us; a scan does ~3 words per ns).
_SPLIT_WORDS = 1 << 18


@intrinsic
def _prefetch(typingctx, arr, index):
    """``llvm.prefetch`` (read, keep in all levels) of ``arr[index]``: a hint, so no bounds check
    (x86 prefetches never fault)."""
    if not (isinstance(arr, types.Array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        addr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [addr.type, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [addr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen


@njit(cache=True, nogil=True, inline="always")
def _distance(codes, w, u, q0, q1, q2, q3):
    """Distance of slot u (uint64) to the query, codes of w words; w is a constant where inlined.

    Indices are unsigned so numba emits no negative-index wraparound, which costs registers
    (the query words then spill to the stack) and instructions in the hot loop.
    """
    b = np.uint64(w) * u
    if w == 1:
        return np.int32(popcount(codes[b] ^ q0))
    if w == 2:
        return np.int32(popcount(codes[b] ^ q0) + popcount(codes[b + np.uint64(1)] ^ q1))
    if w == 3:
        return np.int32(popcount(codes[b] ^ q0) + popcount(codes[b + np.uint64(1)] ^ q1)
                        + popcount(codes[b + np.uint64(2)] ^ q2))
    return np.int32(popcount(codes[b] ^ q0) + popcount(codes[b + np.uint64(1)] ^ q1)
                    + popcount(codes[b + np.uint64(2)] ^ q2) + popcount(codes[b + np.uint64(3)] ^ q3))


@njit(cache=True, nogil=True)
def _lower(cand_dist, hist, a, b, thr):
    """Count candidates a..b (all within ``thr``) in ``hist``, then lower ``thr`` to the k-th
    smallest distance kept so far; hist[-2] holds k, hist[-1] how many kept lie within thr.
    A call of its own: inlined, its state would stay live across the scan loop and crowd its
    registers."""
    for p in range(a, b):
        hist[cand_dist[p]] += 1
    cnt = hist[-1] + (b - a)
    k = hist[-2]
    while cnt - hist[thr] >= k:
        cnt -= hist[thr]
        thr = np.int32(thr - 1)
    hist[-1] = cnt
    return thr


@njit(cache=True, nogil=True, inline="always")
def _fill_words(codes, w, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n):
    """Scan from slot i until the buffer may not hold another block or the range ends: (i, n, thr).

    After each block the threshold falls to the k-th smallest distance seen so far (``_lower``),
    so it tightens early instead of only when the buffer fills, and fewer slots pass it; within
    a block it stays fixed, which keeps the loop as lean as a constant threshold would.

    Kept free of array reassignment: numba then keeps the hot loop free of reference counting.
    ``w`` (the word count) is a literal in each caller, so each gets its own straight-line loop.
    """
    q0 = q[0]
    q1 = q[1] if w > 1 else np.uint64(0)
    q2 = q[2] if w > 2 else np.uint64(0)
    q3 = q[3] if w > 3 else np.uint64(0)
    cap = cand_slots.shape[0]
    while i < stop:
        m = min(_BLOCK, stop - i)
        if n + m > cap:
            return i, n, thr
        t = np.uint64(n)
        for j in range(i, i + m - 1, 2):  # two slots per iteration: one rarely taken branch for both
            u = np.uint64(j)
            if w == 4:  # one 64-byte line per iteration: fetch the one _AHEAD words on
                _prefetch(codes, np.uint64(4) * u + np.uint64(_AHEAD))
            d0 = _distance(codes, w, u, q0, q1, q2, q3)
            d1 = _distance(codes, w, u + np.uint64(1), q0, q1, q2, q3)
            if min(d0, d1) <= thr:
                if d0 <= thr and live[u] != 0 and (not use_label or labels[u] == label):
                    cand_slots[t] = j
                    cand_dist[t] = d0
                    t += np.uint64(1)
                v = u + np.uint64(1)
                if d1 <= thr and live[v] != 0 and (not use_label or labels[v] == label):
                    cand_slots[t] = j + 1
                    cand_dist[t] = d1
                    t += np.uint64(1)
        if m % 2:  # the odd slot left at the end of the range
            j = i + m - 1
            u = np.uint64(j)
            d = _distance(codes, w, u, q0, q1, q2, q3)
            if d <= thr and live[u] != 0 and (not use_label or labels[u] == label):
                cand_slots[t] = j
                cand_dist[t] = d
                t += np.uint64(1)
        if np.int64(t) > n:
            thr = _lower(cand_dist, hist, n, np.int64(t), thr)
        n = np.int64(t)
        i += m
    return i, n, thr


@njit(cache=True, nogil=True)
def _fill1(codes, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n):
    """``_fill_words`` for 1-word (<= 64-bit) codes."""
    return _fill_words(codes, 1, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n)


@njit(cache=True, nogil=True)
def _fill2(codes, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n):
    """``_fill_words`` for 2-word (65- to 128-bit) codes."""
    return _fill_words(codes, 2, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n)


@njit(cache=True, nogil=True)
def _fill3(codes, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n):
    """``_fill_words`` for 3-word (129- to 192-bit) codes."""
    return _fill_words(codes, 3, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n)


@njit(cache=True, nogil=True)
def _fill4(codes, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n):
    """``_fill_words`` for 4-word (193- to 256-bit) codes."""
    return _fill_words(codes, 4, q, live, labels, label, use_label, thr, i, stop, cand_slots, cand_dist, hist, n)


@njit(cache=True, nogil=True)
def scan_into(codes, words, q, live, labels, label, use_label, k, threshold, start, stop):
    """``scan_range``'s candidates as (slots buffer, distances buffer, count): the first count entries
    of each, unordered; for a compiled caller that uses them at once, so nothing is copied."""
    cap = max(min(2 * k, stop - start), 1) + _BLOCK
    cand_slots = np.empty(cap, np.int64)
    cand_dist = np.empty(cap, np.int32)
    top = 64 * words  # no distance exceeds it, so the histogram needs no bounds check
    hist = np.zeros(top + 3, np.int64)  # by distance, then k and a count (see _lower)
    hist[-2] = k
    thr = np.int32(min(threshold, top))
    # Plain int64 and bool, never numba literals (a caller's constant 0 or False): each distinct
    # literal would compile the four large loops below once more (minutes on a cold cache).
    n = np.int64(0)
    i = np.int64(start)
    lab = np.int64(label)
    use = np.bool_(use_label)
    while True:
        if words == 1:
            i, n, thr = _fill1(codes, q, live, labels, lab, use, thr, i, stop, cand_slots, cand_dist, hist, n)
        elif words == 2:
            i, n, thr = _fill2(codes, q, live, labels, lab, use, thr, i, stop, cand_slots, cand_dist, hist, n)
        elif words == 3:
            i, n, thr = _fill3(codes, q, live, labels, lab, use, thr, i, stop, cand_slots, cand_dist, hist, n)
        else:
            i, n, thr = _fill4(codes, q, live, labels, lab, use, thr, i, stop, cand_slots, cand_dist, hist, n)
        kept = 0  # drop what was kept before the threshold fell below it
        for j in range(n):
            if cand_dist[j] <= thr:
                cand_slots[kept] = cand_slots[j]
                cand_dist[kept] = cand_dist[j]
                kept += 1
        n = kept
        if i >= stop:
            break
        if 2 * (n + _BLOCK) > cand_slots.shape[0]:  # ties at the threshold fill the buffer: grow it geometrically
            grown_slots = np.empty(4 * (n + _BLOCK), np.int64)
            grown_slots[:n] = cand_slots[:n]
            cand_slots = grown_slots
            grown_dist = np.empty(4 * (n + _BLOCK), np.int32)
            grown_dist[:n] = cand_dist[:n]
            cand_dist = grown_dist
    return cand_slots, cand_dist, n


@njit(cache=True, nogil=True)
def scan_range(codes, words, q, live, labels, label, use_label, k, threshold, start, stop):
    """Every slot in [start, stop) whose distance is <= the k-th smallest there (and <= threshold)."""
    cand_slots, cand_dist, n = scan_into(codes, words, q, live, labels, label, use_label, k, threshold, start, stop)
    return cand_slots[:n].copy(), cand_dist[:n].copy()


@njit(cache=True, nogil=True)
def _scan_many(codes, words, queries, live, labels, label, use_label, k, threshold, start, stop):
    """scan_range for each query row; results concatenated with offsets (numba returns no ragged lists)."""
    parts_slots = []
    parts_dist = []
    for r in range(queries.shape[0]):
        s, d = scan_range(codes, words, queries[r], live, labels, label, use_label, k, threshold, start, stop)
        parts_slots.append(s)
        parts_dist.append(d)
    return concat(parts_slots, parts_dist)


def scan_threads(end: int, words: int, nq: int, threads: int) -> int:
    """How many threads scanning ``nq`` queries over slots [0, end) of ``words`` words should use:
    one below _SPLIT_WORDS."""
    return 1 if nq * end * words < _SPLIT_WORDS else min(threads, nq) if nq > 1 else threads


def scan_candidates(view: SlotView, queries: np.ndarray, top: TopK, threads: int) -> list[Candidates]:
    """Each query's candidates over every slot of ``view``; ``queries`` are (n, words) uint64.

    The work is split over up to ``threads`` threads: by query for batches, by slot range for
    one big query (whose per-range candidates together still hold every slot <= the k-th smallest).
    """
    nq, end, words = queries.shape[0], view.end, view.words
    codes = view.codes.reshape(-1)
    rest = (view.live, view.labels, *top.filter_args())
    threads = scan_threads(end, words, nq, threads)
    if nq > 1:  # each thread takes a run of queries over all slots
        jobs = [(codes, words, queries[nq * t // threads:nq * (t + 1) // threads], *rest, 0, end)
                for t in range(threads)]
    else:  # each thread takes a range of slots for the one query
        jobs = [(codes, words, queries, *rest, end * t // threads, end * (t + 1) // threads) for t in range(threads)]
    parts = run_split(_scan_many, jobs)
    if nq == 1 and len(parts) > 1:
        return [(np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))]
    return [(slots[a:b], dist[a:b]) for offsets, slots, dist in parts for a, b in itertools.pairwise(offsets.tolist())]
