"""Exact Hamming top-k over packed binary codes: the in-memory mirror of one index shard.

Codes arrive in numpy.packbits order (K bits → ceil(K/8) bytes, padding bits zero) and are kept
one row per slot, padded with zero bytes to whole uint64 words, so a distance is a sum of
``popcount(a ^ b)`` over 1–4 words. Slots are assigned by the Redis store (``index_service.store``);
this mirror obeys them, so a reload from Redis rebuilds exactly the same layout.

A search finds candidates, every slot at distance <= the k-th smallest, by the linear scan
(``orbithash.index.scan``) or, on large shards, through multi-index hashing tables
(``orbithash.index.mih``) when the planner (``orbithash.index.planner``) judges they may pay;
both return the same candidate set, so the choice never changes a result, only its cost. This
module keeps the slots and orders the few candidates by (distance, id), so ties are deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numba import njit

from orbithash import InvalidInput
from orbithash.bits import code_bytes
from orbithash.codes import as_code_array, check_bits, check_k, check_labels
from orbithash.index import planner
from orbithash.index.ids import MAX_SLOTS, IdTable, encode_ids, rank
from orbithash.index.kernel_cache import drop_stale, kernel_cache_dir, sources_digest
from orbithash.index.mih import Tables
from orbithash.index.planner import STRATEGIES, MihPlanner, Strategy
from orbithash.index.pool import cpu_count
from orbithash.index.ranked import Ranked, Result, empty_ranked
from orbithash.index.rwlock import ReadWriteLock
from orbithash.index.scan import scan_candidates, scan_into, scan_threads
from orbithash.index.view import SlotView, TopK

log = logging.getLogger("orbithash.index")

# Above any shard's size (a larger k returns every item anyway), and small enough that the
# candidate buffers sized from k stay within int range.
MAX_K = 2**31 - 1


class HammingIndex:
    """Slots of packed codes with ids and labels, searched exactly by Hamming distance.

    Thread-safe: searches run concurrently, ``put``/``remove`` are exclusive.
    ``threads`` bounds how many cores one search call uses (default: all available).
    """

    def __init__(self, bits: int, capacity: int = 1024, *, threads: int | None = None) -> None:
        self._bits = check_bits(bits)
        self._code_bytes = code_bytes(self._bits)
        self._words = (self._code_bytes + 7) // 8
        self._threads = max(1, threads if threads is not None else cpu_count())
        capacity = max(int(capacity), 1)
        self._codes = np.zeros((capacity, self._words), np.uint64)
        self._labels = np.full(capacity, -1, np.int32)
        self._live = np.zeros(capacity, np.uint8)
        self._ids = IdTable(capacity)  # slot -> id and id -> slot, columnar (``orbithash.index.ids``)
        self._end = 0  # one past the highest slot ever used: the scan range
        self._lock = ReadWriteLock()
        self._planner = MihPlanner(self._lock, self._view)

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def code_bytes(self) -> int:
        return self._code_bytes

    @property
    def capacity(self) -> int:
        return self._codes.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the slot arrays and the id storage, as allocated (MIH tables excluded)."""
        return self._codes.nbytes + self._labels.nbytes + self._live.nbytes + self._ids.nbytes

    @property
    def _slot_of(self) -> _SlotOf:
        """id -> slot as a read-only mapping (tests and debugging; ``slot`` is the API)."""
        return _SlotOf(self)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id: object) -> bool:
        return self.slot(id) is not None  # type: ignore[arg-type]

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
        labels = check_labels(labels, n)
        if n == 0:
            return
        if int(slots.min()) < 0:
            raise InvalidInput("slots must be >= 0")
        if int(slots.max()) > MAX_SLOTS:
            raise InvalidInput(f"slots must be <= {MAX_SLOTS}")
        keys, ends = encode_ids(ids)  # checked as orbithash.codes.check_ids does
        # Repeated slots: the last write wins, as in the Redis store (a load comes in slot order).
        last = None  # where a slot repeats: the position of each slot's last write
        if n > 1 and not bool(np.all(slots[1:] > slots[:-1])):
            _, last_rev = np.unique(slots[::-1], return_index=True)
            if last_rev.shape[0] < n:
                last = n - 1 - last_rev
        with self._lock.write():
            self._grow(int(slots.max()) + 1)
            # In order: an id that moves frees its old slot; an id that held a slot the store gave
            # away is gone; the live flags follow.
            self._ids.put(slots, keys, ends, self._live)
            if last is not None:
                slots, packed, labels = slots[last], packed[last], labels[last]
            self._codes[slots] = packed
            self._labels[slots] = labels
            self._end = max(self._end, int(slots.max()) + 1)
            self._planner.written(slots)

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Forget items; returns the ids that were present (each once)."""
        with self._lock.write():
            return self._ids.remove(ids, self._live)  # type: ignore[return-value]

    def clear(self) -> None:
        """Drop every item (before a full reload from Redis)."""
        with self._lock.write():
            self._live[:] = 0
            self._ids.clear()
            self._end = 0
            self._planner.reset()

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
        self._ids.grow(new)

    # -- reads ------------------------------------------------------------------------------

    def get(self, id: str) -> tuple[bytes, int] | None:
        """(code bytes, label) of a stored id, or None."""
        with self._lock.read():
            slot = self._ids.slot(id)
            if slot is None:
                return None
            code = self._codes[slot].view(np.uint8)[: self._code_bytes].tobytes()
            return code, int(self._labels[slot])

    def slot(self, id: str) -> int | None:
        """The slot of a stored id, or None: where slot-indexed data kept beside the index lives."""
        with self._lock.read():
            return self._ids.slot(id)

    def search(self, queries: np.ndarray, k: int, max_distance: int | None = None,
               label: int | None = None, *, strategy: Strategy = "auto",
               allowed: np.ndarray | None = None) -> list[Result]:
        """Per query up to k (id, distance, label), by ascending distance then id: ``search_ranked``
        as tuples."""
        return [r.hits() for r in self.search_ranked(queries, k, max_distance, label, strategy=strategy,
                                                     allowed=allowed)]

    def search_ranked(self, queries: np.ndarray, k: int, max_distance: int | None = None,
                      label: int | None = None, *, strategy: Strategy = "auto",
                      allowed: np.ndarray | None = None) -> list[Ranked]:
        """Per query up to k hits by ascending distance then id, column-wise.

        ``strategy``: "auto" probes the MIH tables where they exist and may pay, else scans;
        "scan" and "mih" force one method (tests and benchmarks; "mih" builds the tables
        first if there are none and never gives up). The result does not depend on it.
        ``allowed``: a bool per slot (slots past its end count as False); only allowed slots are
        searched, like the label filter, before ranking, so the result is the exact top-k of them.
        """
        if max_distance is None and label is None and allowed is None and strategy == "auto":
            plain = self._search_plain(queries, k)
            if plain is not None:
                return plain
        q = self._words_of(queries, "queries", None)
        k = check_k(k, MAX_K)
        if max_distance is not None and max_distance < 0:
            raise InvalidInput(f"max_distance must be >= 0, got {max_distance}")
        if strategy not in STRATEGIES:
            raise InvalidInput(f"strategy must be auto, scan or mih, got {strategy!r}")
        if allowed is not None and (not isinstance(allowed, np.ndarray) or allowed.dtype != np.bool_
                                    or allowed.ndim != 1):
            raise InvalidInput(f"allowed must be a 1-D bool array, got {getattr(allowed, 'dtype', type(allowed))}")
        top = TopK(k, self._bits if max_distance is None else min(int(max_distance), self._bits), label)
        if q.shape[0] == 0:
            return []
        if strategy == "mih" and self._planner.tables is None:
            self.build_multi_index()
        with self._lock.read():
            view = self._view()
            if view.end == 0:
                return [empty_ranked() for _ in range(q.shape[0])]
            items = len(self._ids)
            if allowed is not None:
                view, items = _restricted(view, allowed)
            probed = self._planner.probe(view, q, top, strategy, items, self._threads)
            if probed is None and q.shape[0] == 1 and scan_threads(view.end, view.words, 1, self._threads) == 1:
                return [self._scan_one(view, q[0], top)]
            if probed is None:
                candidates = scan_candidates(view, q, top, self._threads)
            else:  # scan the queries whose probe gave up
                missed = [r for r, hits in enumerate(probed) if hits is None]
                rescanned = iter(scan_candidates(view, q[missed], top, self._threads) if missed else [])
                candidates = [next(rescanned) if hits is None else hits for hits in probed]
            return [self._rank(slots, dist, k) for slots, dist in candidates]

    def _search_plain(self, queries: np.ndarray, k: int) -> list[Ranked] | None:
        """``search_ranked`` of one query with no filter, radius or forced strategy on a shard the
        scan serves on one thread (the common case on a small shard); None for anything else, which
        the general path then answers (validating again costs a batch little).

        On a small shard the fixed cost of a call decides the latency, so this does the same checks
        (``as_code_array``, ``check_k``) but builds no view, question or word copy: the compiled
        call takes the packed query bytes and the whole slot arrays with their end, scans and ranks.
        """
        arr = as_code_array(queries, self._bits, "queries", None)
        if arr.shape[0] != 1:
            return None
        k = check_k(k, MAX_K)
        if not (arr.flags.c_contiguous and arr.flags.writeable):  # one compiled type, whatever came in
            arr = arr.copy()
        with self._lock.read():
            end = self._end
            if end == 0:
                return [empty_ranked()]
            # planner.MIH_MIN_ITEMS read at call time, as the planner reads it (tests lower it).
            if len(self._ids) >= planner.MIH_MIN_ITEMS or scan_threads(end, self._words, 1, self._threads) != 1:
                return None  # the planner may probe, or the scan may split: the general path decides
            dist, labels, blob, ascii = _search_one(self._codes, arr, self._live, self._labels, end, k,
                                                    self._bits, *self._ids.columns)
            return [Ranked(blob, ascii, dist, labels)]

    def build_multi_index(self) -> Tables:
        """Build (or rebuild) the MIH tables now; searches go on meanwhile, writes too."""
        return self._planner.build()

    def _view(self) -> SlotView:
        """The slot arrays a search or a build reads (caller holds the lock)."""
        end = self._end
        return SlotView(self._codes[:end], self._live[:end], self._labels[:end], self._bits)

    def _scan_one(self, view: SlotView, q: np.ndarray, top: TopK) -> Ranked:
        """One query on one thread, scanned and ranked in a single compiled call.

        On a small shard the scan itself takes tens of microseconds, so the fixed cost of a call
        decides the latency: one dispatch instead of three, no candidate arrays handed back to
        Python, and the k ids joined by the same call.
        """
        dist, labels, blob, ascii = _scan_ranked(view.codes.reshape(-1), view.words, q, view.live, view.labels,
                                                 *top.filter_args(), *self._ids.columns)
        return Ranked(blob, ascii, dist, labels)

    def _rank(self, slots: np.ndarray, dist: np.ndarray, k: int) -> Ranked:
        """Order candidates by (distance, id) and keep k.

        Candidates are usually about k, but a huge tie group at the cut (many equal codes) can make
        them many: ``ids.rank`` sorts them in numba (n log n) and joins only the k kept ids.
        """
        if slots.shape[0] == 0:
            return empty_ranked()
        top, dist, blob, ascii = rank(*self._ids.columns, slots.astype(np.int64, copy=False),
                                      dist.astype(np.int32, copy=False), k)
        return Ranked(blob, ascii, dist, self._labels[top])

    def _words_of(self, codes: np.ndarray, what: str, n: int | None) -> np.ndarray:
        """Checked packed codes (``orbithash.codes.as_code_array``) padded to uint64 words."""
        arr = as_code_array(codes, self._bits, what, n)
        if self._code_bytes == self._words * 8:  # 64, 128, 256 bits: no padding, one aligned copy
            return arr.copy().view(np.uint64)
        padded = np.zeros((arr.shape[0], self._words * 8), np.uint8)
        padded[:, : self._code_bytes] = arr
        return padded.view(np.uint64)


class _SlotOf:
    """A read-only id -> slot mapping over an index (each lookup takes the read lock)."""

    def __init__(self, index: HammingIndex) -> None:
        self._index = index

    def __getitem__(self, id: str) -> int:
        slot = self._index.slot(id)
        if slot is None:
            raise KeyError(id)
        return slot

    def get(self, id: str, default: int | None = None) -> int | None:
        slot = self._index.slot(id)
        return default if slot is None else slot

    def __contains__(self, id: object) -> bool:
        return id in self._index

    def __len__(self) -> int:
        return len(self._index)


def _restricted(view: SlotView, allowed: np.ndarray) -> tuple[SlotView, int]:
    """The view with only allowed slots live, and how many are: both searches already skip dead
    slots, so a filter costs one pass over the slots and nothing in the kernels. The planner
    takes the count as the shard's size, so a narrow filter on a large shard scans."""
    live = np.zeros(view.end, np.uint8)
    m = min(view.end, allowed.shape[0])
    np.logical_and(view.live[:m], allowed[:m], out=live[:m].view(np.bool_))
    return view._replace(live=live), int(np.count_nonzero(live))


@njit(cache=True, nogil=True, inline="always")
def _ranked_labels(labels, top):
    """labels[top] as a loop: numba's fancy indexing does more work for these few."""
    out = np.empty(top.shape[0], np.int32)
    for p in range(top.shape[0]):
        out[p] = labels[top[p]]
    return out


@njit(cache=True, nogil=True)
def _scan_ranked(codes, words, q, live, labels, label, use_label, k, threshold, buf, offsets, lengths):
    """The scan over every slot, then ``rank``: (distances, labels, joined ids, ASCII) of the top k."""
    slots, dist, n = scan_into(codes, words, q, live, labels, label, use_label, k, threshold, 0, live.shape[0])
    top, top_dist, blob, ascii = rank(buf, offsets, lengths, slots[:n], dist[:n], k)
    return top_dist, _ranked_labels(labels, top), blob, ascii


@njit(cache=True, nogil=True)
def _search_one(codes, query, live, labels, end, k, bits, buf, offsets, lengths):
    """``_scan_ranked`` for ``_search_plain``: ``codes`` (capacity, words) and ``live``/``labels`` whole,
    scanned up to ``end``; ``query`` one row of packed bytes (zero padding bits checked), made into
    words here rather than by numpy calls in Python."""
    words = codes.shape[1]
    q = np.zeros(words, np.uint64)
    for b in range(query.shape[1]):  # little-endian, as a uint64 view of the padded bytes reads them
        q[b >> 3] |= np.uint64(query[0, b]) << np.uint64(8 * (b & 7))
    slots, dist, n = scan_into(codes.reshape(-1), words, q, live, labels, 0, False, k, bits, 0, end)
    top, top_dist, blob, ascii = rank(buf, offsets, lengths, slots[:n], dist[:n], k)
    return top_dist, _ranked_labels(labels, top), blob, ascii


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the kernel before a service takes traffic.

    Word count, radius and label filter are runtime arguments of one signature, so a tiny batch,
    a tiny single query and a tiny plain query cover every shape a shard will use. A kernel left
    to compile at its first query would stall every search of a restarted shard meanwhile.
    Cached kernels built from other sources of this package are dropped first (``kernel_cache``).
    """
    cache_dir = kernel_cache_dir(_search_one)
    if cache_dir is not None and drop_stale(cache_dir, sources_digest()):
        log.info("dropped numba's cached index kernels in %s: built from other sources", cache_dir)
    index = HammingIndex(64, capacity=4, threads=1)
    codes = np.arange(16, dtype=np.uint8).reshape(2, 8)
    index.put(np.array([0, 1]), ["a", "b"], codes, np.array([0, 1], np.int32))
    index.search(codes, 1, max_distance=3, label=1)  # a batch: the general path
    index.search(codes[:1], 1, max_distance=3, label=1)  # one query: the fused scan-and-rank path
    index.search(codes[:1], 1)  # one plain query: the single compiled call of ``_search_plain``
    index.get("a")  # the id lookup of Get and of writes
    index.remove(["a"])  # a delete
