"""Exact Hamming top-k over packed binary codes: the in-memory mirror of one index shard.

Codes arrive in numpy.packbits order (K bits → ceil(K/8) bytes, padding bits zero) and are kept
one row per slot, padded with zero bytes to whole uint64 words, so a distance is a sum of
``popcount(a ^ b)`` over 1–4 words. Slots are assigned by the Redis store (``index_service.store``);
this mirror obeys them, so a reload from Redis rebuilds exactly the same layout.

The kernel never sorts N distances. It scans blocks of slots, computing distances vectorised
(LLVM emits VPOPCNTQ/POPCNT for ``llvm.ctpop``), skips a block whose minimum exceeds the running
threshold, and appends the slots within it to a small candidate buffer; when the buffer holds
2k candidates a histogram over the distances (at most 257 bins) yields the k-th smallest, which
becomes the new threshold. The result is every slot with distance <= the final k-th smallest distance: few
candidates, which Python orders by (distance, id) so ties are deterministic.

Large shards also keep multi-index hashing tables (``orbithash.index.mih``), built off the search path
once a shard holds ``MIH_MIN_ITEMS`` items. ``search`` tries them first when they may pay and
falls back to the scan per query when a probe exceeds its work budget; both return the same
candidate set, so the choice never changes a result, only its cost.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from orbithash import InvalidInput
from orbithash.bits import code_bytes as _code_bytes

if TYPE_CHECKING:
    from orbithash.index.mih import Tables

log = logging.getLogger("orbithash.index.hamming")

MIN_BITS = 8
MAX_BITS = 256
_BLOCK = 512  # slots per block: small enough to skip often, large enough to vectorise well
_EXCLUDED = np.int32(1 << 12)  # added to the distance of dead/filtered slots: above any threshold
# Below this many uint64 words scanned per call, handing work to another thread costs more than
# it saves (a hand-off is ~50 us; a scan does ~3 words per ns).
_SPLIT_WORDS = 1 << 18
# Below this many items a scan takes ~0.1 ms: MIH tables would cost memory for nothing.
MIH_MIN_ITEMS = 1 << 18
# A probe may do (buckets + verified candidates) <= slots / this before it gives up: a random
# access costs ~16x a streamed slot of the scan, so a failed probe costs about one more scan.
_MIH_BUDGET_DIVISOR = 16
_MIH_REBUILD_DIRTY = 16  # rebuild the tables once more than 1/16 of the slots were written since
_MIH_MAX_DIRTY = 4  # with more than 1/4 of the slots dirty a probe would scan them: use the scan

Result = list[tuple[str, int, int]]
Strategy = Literal["auto", "scan", "mih"]


@intrinsic
def _popcount(typingctx, x):
    """``llvm.ctpop.i64``: numba exposes no popcount, and LLVM vectorises this one."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = builder.zext(args[0], ir.IntType(64)) if x.bitwidth < 64 else args[0]
        return builder.ctpop(value)

    return types.uint64(x), codegen


@njit(cache=True, nogil=True, inline="always")
def _block_distances(codes, words, q, live, labels, label, use_label, m, out):
    """Distances of m consecutive slots into ``out``; dead or filtered slots get +_EXCLUDED."""
    if words == 1:
        q0 = q[0]
        for j in range(m):
            out[j] = np.int32(_popcount(codes[j] ^ q0))
    elif words == 2:
        q0 = q[0]
        q1 = q[1]
        for j in range(m):
            out[j] = np.int32(_popcount(codes[2 * j] ^ q0) + _popcount(codes[2 * j + 1] ^ q1))
    elif words == 3:
        q0 = q[0]
        q1 = q[1]
        q2 = q[2]
        for j in range(m):
            out[j] = np.int32(_popcount(codes[3 * j] ^ q0) + _popcount(codes[3 * j + 1] ^ q1)
                              + _popcount(codes[3 * j + 2] ^ q2))
    else:
        for j in range(m):
            s = np.uint64(0)
            for w in range(words):
                s += _popcount(codes[words * j + w] ^ q[w])
            out[j] = np.int32(s)
    for j in range(m):
        out[j] |= (np.int32(live[j]) ^ 1) << 12
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
            for j in range(m):
                dj = dist[j]
                if dj <= threshold:
                    cand_slots[n] = i + j
                    cand_dist[n] = dj
                    n += 1
        i += m
    return i, n


@njit(cache=True, nogil=True)
def _tighten(cand_slots, cand_dist, n, k, threshold, bits):
    """Lower the threshold to the k-th smallest candidate distance and drop what lies above it."""
    if n >= k:
        hist = np.zeros(bits + 1, np.int64)
        for j in range(n):
            hist[cand_dist[j]] += 1
        seen = 0
        for t in range(bits + 1):
            seen += hist[t]
            if seen >= k:
                threshold = min(threshold, t)
                break
    kept = 0
    for j in range(n):
        if cand_dist[j] <= threshold:
            cand_slots[kept] = cand_slots[j]
            cand_dist[kept] = cand_dist[j]
            kept += 1
    return kept, threshold


@njit(cache=True, nogil=True)
def _scan(codes, words, q, live, labels, label, use_label, k, threshold, bits, start, stop):
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
        n, threshold = _tighten(cand_slots, cand_dist, n, k, threshold, bits)
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
    """_scan for each query row; results concatenated with offsets (numba returns no ragged lists)."""
    parts_slots = []
    parts_dist = []
    for r in range(queries.shape[0]):
        s, d = _scan(codes, words, queries[r], live, labels, label, use_label, k, threshold, bits,
                     start, stop)
        parts_slots.append(s)
        parts_dist.append(d)
    return _concat(parts_slots, parts_dist)


@njit(cache=True, nogil=True)
def _concat(parts_slots, parts_dist):
    """Per-query (slots, distances) lists → (offsets, all slots, all distances) in one array each."""
    nq = len(parts_slots)
    offsets = np.zeros(nq + 1, np.int64)
    for r in range(nq):
        offsets[r + 1] = offsets[r] + parts_slots[r].shape[0]
    all_slots = np.empty(offsets[nq], np.int64)
    all_dist = np.empty(offsets[nq], np.int32)
    for r in range(nq):
        all_slots[offsets[r]:offsets[r + 1]] = parts_slots[r]
        all_dist[offsets[r]:offsets[r + 1]] = parts_dist[r]
    return offsets, all_slots, all_dist


class _ReadWriteLock:
    """Many concurrent searches, one exclusive writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True  # from here new readers wait
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> Executor:
    """One process-wide pool: the kernel releases the GIL, so threads give real parallelism."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(_cpu_count(), 2), thread_name_prefix="hamming")
        return _pool


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class _MihState:
    """Built tables and the dirty slots written since (``HammingIndex._dirty_log``)."""

    tables: Tables
    cached: tuple[int, np.ndarray] = field(default=(0, np.empty(0, np.int64)))


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


class HammingIndex:
    """Slots of packed codes with ids and labels, searched exactly by Hamming distance.

    Thread-safe: searches run concurrently, ``put``/``remove`` are exclusive.
    ``threads`` bounds how many cores one search call uses (default: all available).
    """

    def __init__(self, bits: int, capacity: int = 1024, *, threads: int | None = None) -> None:
        if not MIN_BITS <= bits <= MAX_BITS:
            raise InvalidInput(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
        self._bits = bits
        self._code_bytes = _code_bytes(bits)
        self._words = (self._code_bytes + 7) // 8
        self._threads = max(1, threads if threads is not None else _cpu_count())
        capacity = max(int(capacity), 1)
        self._codes = np.zeros((capacity, self._words), np.uint64)
        self._labels = np.full(capacity, -1, np.int32)
        self._live = np.zeros(capacity, np.uint8)
        self._ids: list[str | None] = [None] * capacity
        self._slot_of: dict[str, int] = {}
        self._end = 0  # one past the highest slot ever used: the scan range
        self._lock = _ReadWriteLock()
        # Multi-index hashing: tables, the slots written since they were built, build control.
        self._mih: _MihState | None = None
        self._dirty_log: list[np.ndarray] = []
        self._tracking = False  # log written slots (from the first build on)
        self._epoch = 0  # bumped by clear(): a build that started before is not installed
        self._build_mutex = threading.Lock()
        self._mih_skip = 0  # auto mode: scans to do before trying MIH again after a failed probe
        self._mih_misses = 0

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def code_bytes(self) -> int:
        return self._code_bytes

    @property
    def capacity(self) -> int:
        return self._codes.shape[0]

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, id: object) -> bool:
        return id in self._slot_of

    # -- writes -----------------------------------------------------------------------------

    def put(self, slots: np.ndarray, ids: Sequence[str], codes: np.ndarray, labels: np.ndarray) -> None:
        """Store items at the slots the Redis store assigned; an id that moves frees its old slot."""
        slots = np.asarray(slots)
        if slots.ndim != 1 or (slots.size and slots.dtype.kind not in "iu"):
            raise InvalidInput(f"slots must be a 1-D integer array, got {slots.dtype} {slots.shape}")
        slots = slots.astype(np.int64, copy=False)
        n = slots.shape[0]
        if len(ids) != n:
            raise InvalidInput(f"{len(ids)} ids for {n} slots")
        packed = self._words_of(codes, "codes", n)
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise InvalidInput(f"labels must have shape ({n},), got {labels.shape}")
        labels = labels.astype(np.int32)
        if n == 0:
            return
        if int(slots.min()) < 0:
            raise InvalidInput("slots must be >= 0")
        if set(map(type, ids)) != {str}:
            raise InvalidInput("ids must be str")
        # Repeated slots: the last write wins, as in the Redis store.
        _, last_rev = np.unique(slots[::-1], return_index=True)
        last = n - 1 - last_rev
        with self._lock.write():
            self._grow(int(slots.max()) + 1)
            slot_of, owner, live = self._slot_of, self._ids, self._live
            if not slot_of and len(last) == n:  # bulk load into an empty mirror: no moves possible
                fresh = dict(zip(ids, slots.tolist(), strict=True))
                if len(fresh) == n:
                    self._slot_of = fresh
                    for id, slot in fresh.items():
                        owner[slot] = id
                    live[slots] = 1
                    self._codes[slots] = packed
                    self._labels[slots] = labels
                    self._end = max(self._end, int(slots.max()) + 1)
                    self._log_written(slots)
                    return
            for slot, id in zip(slots.tolist(), ids, strict=True):
                old = slot_of.get(id)
                if old is not None and old != slot:
                    owner[old] = None
                    live[old] = 0
                previous = owner[slot]
                if previous is not None and previous != id:
                    del slot_of[previous]  # the store gave this slot away: its old id is gone
                owner[slot] = id
                slot_of[id] = slot
                live[slot] = 1
            self._codes[slots[last]] = packed[last]
            self._labels[slots[last]] = labels[last]
            self._end = max(self._end, int(slots.max()) + 1)
            self._log_written(slots[last])

    def _log_written(self, slots: np.ndarray) -> None:
        """Remember slots whose code may differ from the MIH tables (caller holds the write lock)."""
        if self._tracking:
            self._dirty_log.append(np.array(slots, np.int64))

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Forget items; returns the ids that were present (each once)."""
        removed: list[str] = []
        with self._lock.write():
            for id in ids:
                slot = self._slot_of.pop(id, None)
                if slot is not None:
                    self._ids[slot] = None
                    self._live[slot] = 0
                    removed.append(id)
        return removed

    def clear(self) -> None:
        """Drop every item (before a full reload from Redis)."""
        with self._lock.write():
            self._live[:] = 0
            self._ids = [None] * self.capacity
            self._slot_of.clear()
            self._end = 0
            self._mih = None
            self._dirty_log = []
            self._epoch += 1

    def _grow(self, needed: int) -> None:
        old = self.capacity
        if needed <= old:
            return
        new = max(needed, 2 * old)
        codes = np.zeros((new, self._words), np.uint64)
        codes[:old] = self._codes
        labels = np.full(new, -1, np.int32)
        labels[:old] = self._labels
        live = np.zeros(new, np.uint8)
        live[:old] = self._live
        self._codes, self._labels, self._live = codes, labels, live
        self._ids.extend([None] * (new - old))

    # -- reads ------------------------------------------------------------------------------

    def get(self, id: str) -> tuple[bytes, int] | None:
        """(code bytes, label) of a stored id, or None."""
        with self._lock.read():
            slot = self._slot_of.get(id)
            if slot is None:
                return None
            code = self._codes[slot].view(np.uint8)[: self._code_bytes].tobytes()
            return code, int(self._labels[slot])

    def search(self, queries: np.ndarray, k: int, max_distance: int | None = None,
               label: int | None = None, *, strategy: Strategy = "auto") -> list[Result]:
        """Per query up to k (id, distance, label), by ascending distance then id.

        ``strategy``: "auto" probes the MIH tables where they exist and may pay, else scans;
        "scan" and "mih" force one method (tests and benchmarks; "mih" builds the tables
        first if there are none and never gives up). The result does not depend on it.
        """
        q = self._words_of(queries, "queries", None)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        if max_distance is not None and max_distance < 0:
            raise InvalidInput(f"max_distance must be >= 0, got {max_distance}")
        if strategy not in ("auto", "scan", "mih"):
            raise InvalidInput(f"strategy must be auto, scan or mih, got {strategy!r}")
        threshold = self._bits if max_distance is None else min(int(max_distance), self._bits)
        use_label = label is not None
        label_value = int(label) if label is not None else 0
        if q.shape[0] == 0:
            return []
        if strategy == "mih" and self._mih is None:
            self.build_multi_index()
        with self._lock.read():
            end = self._end
            if end == 0:
                return [[] for _ in range(q.shape[0])]
            args = (self._codes[:end].reshape(-1), self._words)
            rest = (self._live[:end], self._labels[:end], label_value, use_label, int(k),
                    threshold, self._bits)
            state = self._mih if strategy != "scan" else None
            if strategy == "auto":
                state = self._auto_state(end, int(k))
            if state is None:
                return self._run(q, args, rest, end, int(k))
            budget = 1 << 62 if strategy == "mih" else max(end // _MIH_BUDGET_DIVISOR, 1024)
            results = self._run_mih(state, q, args, rest, end, int(k), budget)
            missed = [r for r, hits in enumerate(results) if hits is None]
            if missed:
                self._note_miss()
                for r, hits in zip(missed, self._run(q[missed], args, rest, end, int(k)), strict=True):
                    results[r] = hits
            elif strategy == "auto":
                self._mih_misses = 0
            return results  # type: ignore[return-value]

    # -- multi-index hashing ----------------------------------------------------------------

    def build_multi_index(self) -> Tables:
        """Build (or rebuild) the MIH tables now; searches go on meanwhile, writes too.

        The tables are built from the live arrays without a lock held: every slot written after
        the snapshot point is in the dirty log, which probes verify directly, so a table entry
        torn by a concurrent write can only add a candidate, never hide one.
        """
        with self._build_mutex:
            return self._build_locked()

    def _build_locked(self) -> Tables:
        from orbithash.index import mih  # mih builds on this module's kernel pieces

        with self._lock.read():
            epoch, end = self._epoch, self._end
            codes = self._codes
            live = self._live[:end]
            self._tracking = True  # writers are excluded while we hold the read lock
            mark = len(self._dirty_log)
        tables = mih.build_tables(codes, live, end, self._bits)
        with self._lock.write():
            if self._epoch == epoch:
                self._dirty_log = self._dirty_log[mark:]
                self._mih = _MihState(tables)
        log.info("MIH tables: %d items, %d substrings of %s bits, %.1f MB, built in %.2f s", tables.n,
                 len(tables.widths), "/".join(map(str, tables.widths.tolist())), tables.nbytes / 1e6,
                 tables.build_s)
        return tables

    def _build_in_background(self) -> None:
        """Start a build unless one runs; the searches meanwhile scan (or use the old tables)."""
        if not self._build_mutex.acquire(blocking=False):
            return

        def build() -> None:
            try:
                self._build_locked()
            except Exception:
                log.exception("MIH table build failed; searches keep scanning")
            finally:
                self._build_mutex.release()

        threading.Thread(target=build, name="mih-build", daemon=True).start()

    def _dirty(self, state: _MihState) -> np.ndarray:
        """Slots written since the tables were built (caller holds the read lock)."""
        log_len = len(self._dirty_log)
        if state.cached[0] != log_len:  # racing readers compute the same array: harmless
            state.cached = (log_len, np.concatenate(self._dirty_log) if log_len else np.empty(0, np.int64))
        return state.cached[1]

    def _auto_state(self, end: int, k: int) -> _MihState | None:
        """The tables when a probe may beat the scan; starts a (re)build when they are missing or stale."""
        if len(self._slot_of) < MIH_MIN_ITEMS:
            return None
        state = self._mih
        dirty = 0 if state is None else self._dirty(state).shape[0]
        if state is None or dirty > end // _MIH_REBUILD_DIRTY:
            self._build_in_background()
        if state is None or dirty > end // _MIH_MAX_DIRTY or k > end // 64:
            return None
        if self._mih_skip > 0:  # recent probes gave up: scan for a while (races only skew the count)
            self._mih_skip -= 1
            return None
        return state

    def _note_miss(self) -> None:
        """Back off exponentially after probes that gave up, so MIH costs little where it never pays."""
        self._mih_misses = min(self._mih_misses + 1, 8)
        self._mih_skip = 1 << self._mih_misses

    def _run_mih(self, state: _MihState, q: np.ndarray, args: tuple, rest: tuple, end: int, k: int,
                 budget: int) -> list[Result | None]:
        """MIH probes, batches split by query over threads; None where a probe gave up."""
        t = state.tables
        codes_u8 = self._codes[:end].view(np.uint8)
        dirty = self._dirty(state)
        q_u8 = q.view(np.uint8)
        nq = q.shape[0]
        threads = min(self._threads, nq) if nq >= 4 else 1
        cuts = [nq * i // threads for i in range(threads + 1)]

        def part(a: int, b: int) -> tuple:
            from orbithash.index import mih

            stamps, stamp = _stamps(end)
            out = mih.probe_many(args[0], codes_u8, args[1], q[a:b], q_u8[a:b], *rest, t.starts, t.widths,
                                 t.off_base, t.offsets, t.slots, t.copies, t.n, dirty, stamps, stamp, budget)
            _scratch.stamp = out[4]
            return out

        futures = [_shared_pool().submit(part, a, b) for a, b in itertools.pairwise(cuts[1:])]
        parts = [part(cuts[0], cuts[1])] + [f.result() for f in futures]
        results: list[Result | None] = []
        for bounds, slots, dist, ok, _ in parts:
            for r, (a, b) in enumerate(itertools.pairwise(bounds.tolist())):
                results.append(self._rank(slots[a:b], dist[a:b], k) if ok[r] else None)
        return results

    def _run(self, q: np.ndarray, args: tuple, rest: tuple, end: int, k: int) -> list[Result]:
        """Split the work over threads: by query for batches, by slot range for one big query."""
        nq = q.shape[0]
        threads = 1 if nq * end * self._words < _SPLIT_WORDS else self._threads
        if nq > 1:  # each thread takes a run of queries over all slots
            threads = min(threads, nq)
            jobs = [(q[nq * t // threads:nq * (t + 1) // threads], 0, end) for t in range(threads)]
        else:  # each thread takes a range of slots for the one query
            jobs = [(q, end * t // threads, end * (t + 1) // threads) for t in range(threads)]
        futures = [_shared_pool().submit(_scan_many, *args, part, *rest, a, b) for part, a, b in jobs[1:]]
        part, a, b = jobs[0]
        parts = [_scan_many(*args, part, *rest, a, b)] + [f.result() for f in futures]
        if nq == 1 and len(parts) > 1:
            slots = np.concatenate([p[1] for p in parts])
            dist = np.concatenate([p[2] for p in parts])
            return [self._rank(slots, dist, k)]
        return [self._rank(slots[a:b], dist[a:b], k)
                for offsets, slots, dist in parts for a, b in itertools.pairwise(offsets.tolist())]

    def _rank(self, slots: np.ndarray, dist: np.ndarray, k: int) -> Result:
        """Order candidates by (distance, id) and keep k.

        Candidates are usually about k; only a huge tie group at the cut (many equal codes) is
        first narrowed with a partition and a heap, so ranking never sorts the shard.
        """
        ids = self._ids
        if slots.shape[0] > 4 * k + 256:
            cut = int(np.partition(dist, k - 1)[k - 1])
            below = dist < cut
            tied = slots[dist == cut].tolist()
            chosen = heapq.nsmallest(k - int(np.count_nonzero(below)), [ids[s] for s in tied])
            slot_of = self._slot_of
            slots = np.concatenate([slots[below], np.array([slot_of[i] for i in chosen], np.int64)])
            dist = np.concatenate([dist[below], np.full(len(chosen), cut, np.int32)])
        sl = slots.tolist()
        keyed = sorted(zip(dist.tolist(), [ids[s] for s in sl], sl, strict=True))[:k]
        labels = self._labels[np.array([s for _, _, s in keyed], np.int64)].tolist()
        return [(i, d, lab) for (d, i, _), lab in zip(keyed, labels, strict=True)]

    def _words_of(self, codes: np.ndarray, what: str, n: int | None) -> np.ndarray:
        """Validate (n, code_bytes) uint8 packed codes and pad them to uint64 words."""
        arr = np.asarray(codes)
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != self._code_bytes:
            raise InvalidInput(f"{what} must be uint8 of shape (n, {self._code_bytes}) for {self._bits}-bit "
                               f"codes, got {arr.dtype} {arr.shape}")
        if n is not None and arr.shape[0] != n:
            raise InvalidInput(f"{arr.shape[0]} {what} for {n} items")
        spare = self._code_bytes * 8 - self._bits
        if spare and arr.shape[0] and np.any(arr[:, -1] & np.uint8((1 << spare) - 1)):
            raise InvalidInput(f"{what}: the {spare} padding bits after bit {self._bits} must be zero")
        padded = np.zeros((arr.shape[0], self._words * 8), np.uint8)
        padded[:, : self._code_bytes] = arr
        return padded.view(np.uint64)


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the kernel before a service takes traffic.

    Word count, radius and label filter are runtime arguments of one signature, so one tiny
    search covers every shape a shard will use.
    """
    index = HammingIndex(64, capacity=4, threads=1)
    codes = np.arange(16, dtype=np.uint8).reshape(2, 8)
    index.put(np.array([0, 1]), ["a", "b"], codes, np.array([0, 1], np.int32))
    index.search(codes, 1, max_distance=3, label=1)


def rerank_asymmetric(u_query: np.ndarray, stored_codes: np.ndarray, bits: int, ids: Sequence[str]) -> list[int]:
    """Order candidates by score -u·b (b in {-1, +1} from the stored bits), ties by id.

    Returns indices into ``ids``. Asymmetric: the query keeps its real-valued hash output u, so
    candidates at equal Hamming distance are told apart by how sure the query was of the bits
    on which they differ — a cheap refinement of the few hundred candidates of an exact search.
    """
    u = np.asarray(u_query, np.float64).reshape(-1)
    if u.shape[0] != bits or not np.all(np.isfinite(u)):
        raise InvalidInput(f"u_query must be {bits} finite floats, got shape {np.shape(u_query)}")
    codes = np.asarray(stored_codes)
    n = len(ids)
    if codes.dtype != np.uint8 or codes.shape != (n, _code_bytes(bits)):
        raise InvalidInput(f"stored_codes must be uint8 of shape ({n}, {_code_bytes(bits)}), "
                           f"got {codes.dtype} {codes.shape}")
    signs = np.unpackbits(codes, axis=1, count=bits).astype(np.float64) * 2 - 1
    score = (-(signs @ u)).tolist()
    return sorted(range(n), key=lambda i: (score[i], ids[i]))
