"""Exact sub-linear Hamming top-k: multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012).

The K bits are cut into m disjoint substrings; each gets a table from substring value to the
slots holding it (a counting sort: ``offsets`` of 2^width + 1 entries and the slots in bucket
order, int32). Pigeonhole: an item at full distance d has some substring within floor(d / m) of
the query's. So probing, for r = 0, 1, ..., every bucket within r of the query's substring in
every table sees every item with distance < m * (r + 1); once the running k-th smallest distance
(or the radius) lies below that bound, nothing unseen can enter the result, which is then
exactly what the linear scan returns (every slot at distance <= the k-th smallest, ties included;
the caller orders them by (distance, id)).

Tables are immutable once built. Writes after a build are not folded in: the mirror logs the
slots it wrote ("dirty" slots) and a probe verifies them directly, while stale table entries
are harmless because every candidate is verified against the live code, flag and label. The
planner (``orbithash.index.planner``) rebuilds the tables, off the search path, when the dirty
log grows.

A probe gives up (returns ``ok = False``) once its work - buckets probed plus candidates verified
- passes a budget, so a query that MIH serves badly (a large k on uniform codes, a rare label)
costs at most about one extra scan before the caller scans instead.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from orbithash.index.kernels import concat, popcount, tighten
from orbithash.index.pool import run_split
from orbithash.index.view import Candidates, SlotView, TopK

MAX_WIDTH = 22  # 2^22 + 1 int32 offsets = 16 MiB per table: the cap on table size per substring
# Codes of at most this many uint64 words are also copied into the tables next to their slots:
# a probe then streams through a bucket instead of fetching each slot's code from a random
# place (a cache miss each, ~20x slower). Wider codes would cost too much memory per table.
INLINE_WORDS = 2


def plan_widths(bits: int, n: int) -> np.ndarray:
    """Substring widths: about log2(n) bits each (the paper's choice), at most MAX_WIDTH.

    Wider substrings mean fewer items per bucket but more buckets per probe radius; log2(n)
    makes a bucket hold about one item on uniform codes.
    """
    target = max(math.log2(max(n, 2)), 8.0)
    m = max(1, round(bits / target), math.ceil(bits / MAX_WIDTH))
    base, extra = divmod(bits, m)
    return np.array([base + (j < extra) for j in range(m)], np.int64)


@njit(cache=True, nogil=True, inline="always")
def _keys_of(code, starts, widths, out):
    """Substring values of one packed code (bit i = bit 7 - i % 8 of byte i // 8)."""
    for j in range(starts.shape[0]):
        key = 0
        for i in range(starts[j], starts[j] + widths[j]):
            key = (key << 1) | ((np.int64(code[i >> 3]) >> (7 - (i & 7))) & 1)
        out[j] = key


@njit(cache=True, nogil=True)
def _build(codes_u8, codes, words, inline, live, end, starts, widths):
    """Counting-sort every live slot below ``end`` into one bucket per substring value, per table."""
    m = starts.shape[0]
    n = 0
    for s in range(end):
        n += live[s] != 0
    off_base = np.zeros(m + 1, np.int64)
    for j in range(m):
        off_base[j + 1] = off_base[j] + (np.int64(1) << widths[j]) + 1
    counts = np.zeros(off_base[m], np.int64)
    keys = np.empty((n, m), np.int32)
    owners = np.empty(n, np.int32)
    key = np.empty(m, np.int64)
    t = 0
    for s in range(end):
        if live[s]:
            _keys_of(codes_u8[s], starts, widths, key)
            for j in range(m):
                keys[t, j] = key[j]
                counts[off_base[j] + key[j] + 1] += 1
            owners[t] = s
            t += 1
    for j in range(m):
        for p in range(off_base[j] + 1, off_base[j + 1]):
            counts[p] += counts[p - 1]
    offsets = counts.astype(np.int32)
    slots = np.empty(m * n, np.int32)
    copies = np.empty(m * n * words if inline else 0, np.uint64)
    for t in range(n):
        for j in range(m):
            p = off_base[j] + keys[t, j]
            at = j * n + counts[p]
            slots[at] = owners[t]
            if inline:
                for w in range(words):
                    copies[at * words + w] = codes[owners[t] * words + w]
            counts[p] += 1
    return offsets, off_base, slots, copies, n


@dataclass(frozen=True)
class Tables:
    """Immutable MIH tables over the slots that were live when built."""

    bits: int
    starts: np.ndarray  # first bit of each substring
    widths: np.ndarray
    off_base: np.ndarray  # where table j's offsets start in ``offsets``
    offsets: np.ndarray  # int32, per table 2^width + 1 bucket boundaries
    slots: np.ndarray  # int32, table j's slots at [j * n, (j + 1) * n)
    copies: np.ndarray  # uint64 codes as of the build, ``words`` per entry of ``slots`` (or empty)
    n: int  # slots indexed
    build_s: float

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.slots.nbytes + self.copies.nbytes)


def build_tables(codes: np.ndarray, live: np.ndarray, end: int, bits: int) -> Tables:
    """Tables over the live slots in [0, end) of a (slots, words) uint64 code array."""
    if end >= 2**31:
        raise ValueError("multi-index tables hold int32 slots: at most 2^31 - 1 slots")
    began = time.perf_counter()
    widths = plan_widths(bits, int(np.count_nonzero(live[:end])))
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    words = codes.shape[1]
    offsets, off_base, slots, copies, n = _build(codes[:end].view(np.uint8), codes[:end].reshape(-1), words,
                                                 words <= INLINE_WORDS, live, end, starts, widths)
    return Tables(bits, starts, widths, off_base, offsets, slots, copies, int(n), time.perf_counter() - began)


@njit(cache=True, nogil=True, inline="always")
def _distance(codes, words, s, q):
    d = np.uint64(0)
    for w in range(words):
        d += popcount(codes[words * s + w] ^ q[w])
    return np.int32(d)


@njit(cache=True, nogil=True, inline="always")
def _push(cand_slots, cand_dist, n, s, d, k, threshold, bits):
    """Append a candidate; a full buffer is first cut to the k-th smallest, then grown if ties fill it."""
    if n == cand_slots.shape[0]:
        n, threshold = tighten(cand_slots, cand_dist, n, k, threshold, bits)
        if n > cand_slots.shape[0] // 2:
            grown_slots = np.empty(2 * cand_slots.shape[0], np.int64)
            grown_slots[:n] = cand_slots[:n]
            cand_slots = grown_slots
            grown_dist = np.empty(2 * cand_dist.shape[0], np.int32)
            grown_dist[:n] = cand_dist[:n]
            cand_dist = grown_dist
    if d <= threshold:
        cand_slots[n] = s
        cand_dist[n] = d
        n += 1
    return cand_slots, cand_dist, n, threshold


@njit(cache=True, nogil=True)
def _probe(codes, codes_u8, words, q, q_u8, live, labels, label, use_label, k, threshold, bits,
           starts, widths, off_base, offsets, slots, copies, n_built, dirty, stamps, stamp, budget):
    """One query: (slots, distances) of every candidate <= the k-th smallest, and ok.

    ``stamps[s] == stamp`` marks a slot already verified for this query (a slot sits in m
    tables and maybe in the dirty log); the caller advances the stamp between queries, so the
    marks never need clearing. With inline ``copies`` an entry is first judged by its copy,
    read in bucket order; only one that passes is checked against the slot's current code
    (a copy may be stale: then the slot is in ``dirty`` and verified there).
    """
    inline = copies.shape[0] > 0
    m = starts.shape[0]
    qkey = np.empty(m, np.int64)
    _keys_of(q_u8, starts, widths, qkey)
    cand_slots = np.empty(2 * k + 1024, np.int64)
    cand_dist = np.empty(2 * k + 1024, np.int32)
    n = 0
    work = 0
    for t in range(dirty.shape[0]):
        s = dirty[t]
        if stamps[s] == stamp:
            continue
        stamps[s] = stamp
        d = _distance(codes, words, s, q)
        if d <= threshold and live[s] and (not use_label or labels[s] == label):
            cand_slots, cand_dist, n, threshold = _push(cand_slots, cand_dist, n, s, d, k, threshold, bits)
    max_width = 0
    for j in range(m):
        max_width = max(max_width, widths[j])
    for r in range(max_width + 1):
        for j in range(m):
            w = widths[j]
            if r > w:
                continue
            limit = np.int64(1) << w
            mask = (np.int64(1) << r) - 1
            base = off_base[j]
            table = j * n_built
            while mask < limit:
                v = qkey[j] ^ mask
                a = offsets[base + v]
                b = offsets[base + v + 1]
                work += 1 + b - a
                for idx in range(a, b):
                    if inline and _distance(copies, words, table + idx, q) > threshold:
                        continue
                    s = slots[table + idx]
                    if stamps[s] == stamp:
                        continue
                    stamps[s] = stamp
                    d = _distance(codes, words, s, q)
                    if d <= threshold and live[s] and (not use_label or labels[s] == label):
                        cand_slots, cand_dist, n, threshold = _push(cand_slots, cand_dist, n, s, d, k,
                                                                    threshold, bits)
                if work > budget:
                    return cand_slots[:0].copy(), cand_dist[:0].copy(), False
                if mask == 0:
                    break
                low = mask & -mask  # Gosper's hack: the next mask with the same popcount
                ripple = mask + low
                mask = (((ripple ^ mask) >> 2) // low) | ripple
        n, threshold = tighten(cand_slots, cand_dist, n, k, threshold, bits)
        if threshold < m * (r + 1):  # pigeonhole: every item at distance <= threshold was seen
            break
    return cand_slots[:n].copy(), cand_dist[:n].copy(), True


@njit(cache=True, nogil=True)
def probe_many(codes, codes_u8, words, queries, queries_u8, live, labels, label, use_label, k, threshold,
               bits, starts, widths, off_base, offsets, slots, copies, n_built, dirty, stamps, stamp, budget):
    """_probe per query row: (offsets, slots, distances, ok per query, next stamp)."""
    nq = queries.shape[0]
    parts_slots = []
    parts_dist = []
    ok = np.zeros(nq, np.uint8)
    for r in range(nq):
        if stamp >= 255:  # uint8 marks: wipe once every 254 queries instead of after each
            stamps[:] = 0
            stamp = 0
        stamp += 1
        s, d, good = _probe(codes, codes_u8, words, queries[r], queries_u8[r], live, labels, label, use_label,
                            k, threshold, bits, starts, widths, off_base, offsets, slots, copies, n_built,
                            dirty, stamps, stamp, budget)
        ok[r] = good
        parts_slots.append(s)
        parts_dist.append(d)
    bounds, all_slots, all_dist = concat(parts_slots, parts_dist)
    return bounds, all_slots, all_dist, ok, stamp


_scratch = threading.local()


def _stamps(end: int) -> tuple[np.ndarray, int]:
    """This thread's per-slot "already verified" marks for MIH probes (one byte per slot).

    One array per thread, shared by every index the thread searches: the stamp only grows
    (and the marks are wiped when it wraps), so marks of earlier queries never look current.
    """
    stamps = getattr(_scratch, "stamps", None)
    if stamps is None or stamps.shape[0] < end:
        _scratch.stamps = stamps = np.zeros(max(end, 2 * (0 if stamps is None else stamps.shape[0])), np.uint8)
        _scratch.stamp = 0
    return stamps, _scratch.stamp


def probe(tables: Tables, view: SlotView, queries: np.ndarray, top: TopK, dirty: np.ndarray, budget: int,
          threads: int) -> list[Candidates | None]:
    """Each query's candidates through the tables, or None where its probe passed ``budget``.

    ``queries`` are (n, words) uint64 and ``dirty`` the slots written since ``tables`` were built.
    Batches of four or more queries are split by query over up to ``threads`` threads.
    """
    codes, codes_u8 = view.codes.reshape(-1), view.codes.view(np.uint8)
    rest = (view.live, view.labels, *top.filter_args(), view.bits, tables.starts, tables.widths,
            tables.off_base, tables.offsets, tables.slots, tables.copies, tables.n, dirty)
    queries_u8 = queries.view(np.uint8)
    nq = queries.shape[0]
    threads = min(threads, nq) if nq >= 4 else 1
    cuts = [nq * i // threads for i in range(threads + 1)]

    def part(a: int, b: int) -> tuple[np.ndarray, ...]:
        stamps, stamp = _stamps(view.end)
        out = probe_many(codes, codes_u8, view.words, queries[a:b], queries_u8[a:b], *rest, stamps, stamp, budget)
        _scratch.stamp = out[4]
        return out

    found: list[Candidates | None] = []
    for bounds, slots, dist, ok, _ in run_split(part, list(itertools.pairwise(cuts))):
        for r, (a, b) in enumerate(itertools.pairwise(bounds.tolist())):
            found.append((slots[a:b], dist[a:b]) if ok[r] else None)
    return found
