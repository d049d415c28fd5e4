"""The ids of one shard's slots, columnar: ~40 bytes for a 14-byte id, where str objects, a list and a
dict took ~134 (docs/memory.md).

Each slot's id is its UTF-8 bytes in one growable ``uint8`` buffer (``offsets`` uint64 and
``lengths`` uint16 per slot, length 0 = no id), and the id -> slot map is an open-addressing table
of int32 slots (linear probing, tombstones, load <= 3/4) keyed by a 64-bit hash of the bytes, the
hash kept per slot so a rehash never reads the buffer. A hash match is confirmed on the bytes, so
collisions never confuse two ids. Bulk writes and lookups run in numba; the index holds its
reader-writer lock around every call (writes exclusive), so this class has no lock of its own.

An id that moves keeps its bytes; an id that leaves its slot leaves its bytes behind as garbage,
dropped when the buffer next grows (growing copies only live ids, in slot order), so the buffer
stays within about 1.5x the live bytes plus one batch. Imports nothing of the index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from orbithash.codes import MAX_ID_BYTES, check_ids

_EMPTY = np.int32(-1)
_TOMB = np.int32(-2)
_MIN_TABLE = 16
MAX_SLOTS = 2**31 - 2  # table entries are int32 slots; -1 and -2 mark empty and deleted buckets

# state: [bytes appended, garbage bytes, live ids, table buckets filled (live + tombstones)]
_USED, _GARBAGE, _COUNT, _FILLED = 0, 1, 2, 3


@njit(cache=True, nogil=True, inline="always")
def _hash(buf, start, length):
    """FNV-1a over the bytes, then splitmix64's finaliser, so the low bits index the table well."""
    h = np.uint64(0xCBF29CE484222325)
    for i in range(start, start + length):
        h = (h ^ np.uint64(buf[i])) * np.uint64(0x100000001B3)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _find(table, hashes, offsets, lengths, buf, keys, start, length, h):
    """(bucket, slot) of the id keys[start:start + length] with hash h, slot -1 when absent; then
    bucket is where to insert it (the first tombstone on the probe path, else its empty end)."""
    mask = np.uint64(table.shape[0] - 1)
    b = np.int64(h & mask)
    free = np.int64(-1)
    while True:
        s = table[b]
        if s == _EMPTY:
            return (b if free < 0 else free), np.int64(-1)
        if s == _TOMB:
            if free < 0:
                free = b
        elif hashes[s] == h and lengths[s] == length:
            o = np.int64(offsets[s])
            same = True
            for i in range(length):
                if buf[o + i] != keys[start + i]:
                    same = False
                    break
            if same:
                return b, np.int64(s)
        b = np.int64((np.uint64(b) + np.uint64(1)) & mask)


@njit(cache=True, nogil=True, inline="always")
def _bucket_of_slot(table, hashes, slot):
    """The bucket holding ``slot`` (which must hold an id)."""
    mask = np.uint64(table.shape[0] - 1)
    b = np.int64(hashes[slot] & mask)
    while table[b] != slot:
        b = np.int64((np.uint64(b) + np.uint64(1)) & mask)
    return b


@njit(cache=True, nogil=True)
def _put_many(table, hashes, offsets, lengths, buf, state, live, slots, keys, ends):
    """Put id i (keys[ends[i-1]:ends[i]]) at slots[i], in order: an id that moves frees its old
    slot, an id that held the slot is dropped. The caller reserved room in ``buf`` and ``table``."""
    start = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        length = ends[i] - start
        h = _hash(keys, start, length)
        b, old = _find(table, hashes, offsets, lengths, buf, keys, start, length, h)
        if old != s:
            if lengths[s] > 0:  # the store gave this slot away: its old id is gone
                table[_bucket_of_slot(table, hashes, s)] = _TOMB
                state[_GARBAGE] += lengths[s]
                state[_COUNT] -= 1
            if old >= 0:  # the id moves and takes its bytes along
                offsets[s] = offsets[old]
                lengths[s] = lengths[old]
                lengths[old] = 0
                live[old] = 0
                table[b] = s
            else:
                used = state[_USED]
                for j in range(length):
                    buf[used + j] = keys[start + j]
                offsets[s] = used
                lengths[s] = length
                state[_USED] = used + length
                if table[b] == _EMPTY:
                    state[_FILLED] += 1
                table[b] = s
                state[_COUNT] += 1
            hashes[s] = h
        live[s] = 1
        start = ends[i]


@njit(cache=True, nogil=True)
def _remove_many(table, hashes, offsets, lengths, buf, state, live, keys, ends, found):
    """Drop each id present; found[i] = 1 for those (an id repeated in ``keys`` only once)."""
    start = 0
    for i in range(ends.shape[0]):
        length = ends[i] - start
        b, s = _find(table, hashes, offsets, lengths, buf, keys, start, length, _hash(keys, start, length))
        if s >= 0:
            table[b] = _TOMB
            state[_GARBAGE] += lengths[s]
            state[_COUNT] -= 1
            lengths[s] = 0
            live[s] = 0
            found[i] = 1
        start = ends[i]


@njit(cache=True, nogil=True)
def _lookup(table, hashes, offsets, lengths, buf, key):
    """The slot of one id (a uint8 array or bytes), or -1."""
    return _find(table, hashes, offsets, lengths, buf, key, 0, len(key), _hash(key, 0, len(key)))[1]


@njit(cache=True, nogil=True)
def _rehash(table, hashes, lengths):
    """Insert every slot that holds an id into an empty table; returns how many."""
    mask = np.uint64(table.shape[0] - 1)
    n = 0
    for s in range(lengths.shape[0]):
        if lengths[s] > 0:
            b = np.int64(hashes[s] & mask)
            while table[b] != _EMPTY:
                b = np.int64((np.uint64(b) + np.uint64(1)) & mask)
            table[b] = s
            n += 1
    return n


@njit(cache=True, nogil=True)
def _gather_joined(buf, offsets, lengths, slots):
    """The ids of ``slots`` joined by 0xFF bytes (never part of UTF-8), and whether all are ASCII:
    then Python turns them into str with one decode and one split, not one decode per id."""
    size = max(slots.shape[0] - 1, 0)
    for i in range(slots.shape[0]):
        size += lengths[slots[i]]
    out = np.empty(size, np.uint8)
    ascii = True
    p = 0
    for i in range(slots.shape[0]):
        if i > 0:
            out[p] = 0xFF
            p += 1
        s = slots[i]
        o = np.int64(offsets[s])
        for j in range(lengths[s]):
            c = buf[o + j]
            ascii &= c < 0x80
            out[p + j] = c
        p += lengths[s]
    return out, ascii


@njit(cache=True, nogil=True)
def _compact(old, offsets, lengths, new):
    """Copy the live ids into ``new`` in slot order, updating offsets; returns the bytes used."""
    p = 0
    for s in range(lengths.shape[0]):
        n = np.int64(lengths[s])
        if n > 0:
            o = np.int64(offsets[s])
            for j in range(n):
                new[p + j] = old[o + j]
            offsets[s] = p
            p += n
    return p


@njit(cache=True, nogil=True, inline="always")
def _id_less(local, starts, lengths, a, b):
    """Whether id a sorts before id b: bytewise, a prefix first. UTF-8 byte order is code point
    order, so this is how Python compares them as str."""
    oa = starts[a]
    ob = starts[b]
    la = lengths[a]
    lb = lengths[b]
    for i in range(min(la, lb)):
        x = local[oa + i]
        y = local[ob + i]
        if x != y:
            return x < y
    return la < lb


@njit(cache=True, nogil=True)
def _tie_less(local, starts, lengths, a, b):
    """``_id_less`` as a call of its own: only equal keys need it, and inlined into the sort's
    comparisons its loop makes every comparison several times slower."""
    return _id_less(local, starts, lengths, a, b)


@njit(cache=True, nogil=True)
def _sort_group(order, a, b, keys, local, starts, lengths, tmp):
    """Sort order[a:b] by (key, id): insertion-sorted runs of 16, then bottom-up merges through
    ``tmp`` (as long as ``order``), so even a huge run of equal keys costs n log n comparisons,
    never n^2 (ids are unique: stability is moot). Most groups fit one run: no merge at all."""
    run = 16
    for s in range(a, b, run):
        e = min(s + run, b)
        for i in range(s + 1, e):
            x = order[i]
            kx = keys[x]
            j = i - 1
            while j >= s:
                y = order[j]
                ky = keys[y]
                if kx > ky or (kx == ky and not _tie_less(local, starts, lengths, x, y)):
                    break
                order[j + 1] = y
                j -= 1
            order[j + 1] = x
    width = run
    in_tmp = False  # where the sorted runs are now
    while width < b - a:
        src = tmp if in_tmp else order
        dst = order if in_tmp else tmp
        for lo in range(a, b, 2 * width):
            mid = min(lo + width, b)
            hi = min(lo + 2 * width, b)
            i = lo
            j = mid
            p = lo
            while i < mid and j < hi:
                x = src[i]
                y = src[j]
                if keys[y] < keys[x] or (keys[y] == keys[x] and _tie_less(local, starts, lengths, y, x)):
                    dst[p] = y
                    j += 1
                else:
                    dst[p] = x
                    i += 1
                p += 1
            while i < mid:
                dst[p] = src[i]
                i += 1
                p += 1
            while j < hi:
                dst[p] = src[j]
                j += 1
                p += 1
        in_tmp = not in_tmp
        width *= 2
    if in_tmp:
        for i in range(a, b):
            order[i] = tmp[i]


@njit(cache=True, nogil=True)
def rank(buf, offsets, lengths, slots, dist, k):
    """The min(k, n) candidates smallest by (distance, id), in order: (slots, distances, their ids
    joined by 0xFF bytes, whether all are ASCII), as ``split_ids`` reads them.

    Distances are small integers, so a count of them gives the cut (candidates beyond the first
    distance group that reaches k can never be kept) and a counting sort groups the rest by
    distance; only within a group are ids compared. The ids of those candidates are copied once
    into a small local buffer. Each gets one integer key: the 8 bytes that follow the ids' common
    prefix (ids like ``item-000001234`` share most of theirs), zero-padded, so a shorter id can only
    tie with or precede those it is a prefix of; equal keys are finished by comparing all the
    bytes. Groups are small, so the sort is mostly insertion sort on integers: no Python sort, no
    general argsort, no id str but the k kept. Scratch arrays share one allocation.
    """
    n = slots.shape[0]
    top = 0
    for j in range(n):
        top = max(top, dist[j])
    count = np.zeros(top + 2, np.int64)
    for j in range(n):
        count[dist[j] + 1] += 1
    m = min(k, n)
    cut = 0  # candidates above the cut's distance group can never be in the first m
    seen = 0
    for t in range(top + 1):
        seen += count[t + 1]
        if seen >= m:
            cut = t
            break
    for t in range(cut + 1):  # count[t]: where distance t's group starts
        count[t + 1] += count[t]
    used = count[cut + 1]
    scratch = np.empty(6 * used, np.int64)
    pick = scratch[:used]  # indices into slots, grouped by distance, in slot-list order within
    starts = scratch[used:2 * used]
    lens = scratch[2 * used:3 * used]
    offs = scratch[3 * used:4 * used]
    order = scratch[4 * used:5 * used]  # into pick, sorted
    tmp = scratch[5 * used:]
    for j in range(n):
        d = dist[j]
        if d <= cut:
            pick[count[d]] = j
            count[d] += 1
    size = 0
    lead = np.uint8(0)  # the first bytes of the ids, or-ed
    for p in range(used):  # independent loads, so their cache misses overlap: 2x faster on a large shard
        s = slots[pick[p]]
        lens[p] = lengths[s]
        offs[p] = offsets[s]
        lead |= buf[offs[p]]  # touches each id's bytes now, while the other loads are in flight
    for p in range(used):
        starts[p] = size
        size += lens[p]
    local = np.empty(size, np.uint8)
    for p in range(used):
        o = offs[p]
        st = starts[p]
        for i in range(lens[p]):
            local[st + i] = buf[o + i]
    common = lens[0] if used else 0  # the longest prefix all these ids share
    for p in range(1, used):
        c = 0
        limit = min(common, lens[p])
        while c < limit and local[starts[p] + c] == local[c]:
            c += 1
        common = c
    keys = np.empty(used, np.uint64)
    for p in range(used):
        key = np.uint64(0)
        st = starts[p] + common
        rest = lens[p] - common
        for i in range(8):
            key <<= np.uint64(8)
            if i < rest:
                key |= np.uint64(local[st + i])
        keys[p] = key
        order[p] = p
    a = 0
    for t in range(cut + 1):  # each distance group (count[t] is now where group t ends)
        b = count[t]
        if b - a > 1:
            _sort_group(order, a, b, keys, local, starts, lens, tmp)
        a = b
    out_slots = np.empty(m, np.int64)
    out_dist = np.empty(m, np.int32)
    joined = max(m - 1, 0)
    for p in range(m):
        out_slots[p] = slots[pick[order[p]]]
        out_dist[p] = dist[pick[order[p]]]
        joined += lens[order[p]]
    blob = np.empty(joined, np.uint8)
    ascii = True
    w = 0
    for p in range(m):
        if p > 0:
            blob[w] = 0xFF
            w += 1
        q = order[p]
        st = starts[q]
        for i in range(lens[q]):
            c = local[st + i]
            ascii &= c < 0x80
            blob[w + i] = c
        w += lens[q]
    return out_slots, out_dist, blob, ascii and lead < 0x80  # (a lead byte >= 0x80 is never ASCII)


def _concat(raw: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Ids as one uint8 array and their end offsets (int64)."""
    ends = np.cumsum(np.fromiter(map(len, raw), np.int64, len(raw)))
    return np.frombuffer(b"".join(raw), np.uint8), ends


def encode_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Checked ids (``orbithash.codes.check_ids``) as their UTF-8 bytes back to back, and the end
    offsets: what ``IdTable.put`` takes.

    ASCII ids, the common case, take a fast path that never makes a bytes object per id (a million
    of them would briefly cost ~55 MB): it accepts only what ``check_ids`` accepts (non-empty str
    of at most MAX_ID_BYTES characters, one byte each) and leaves anything else to it.
    """
    try:
        joined = "".join(ids)
    except TypeError:  # some id is not a str: check_ids says which
        joined = None
    if joined is not None and joined.isascii():
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        if lengths.size and int(lengths.min()) >= 1 and int(lengths.max()) <= MAX_ID_BYTES:
            return np.frombuffer(joined.encode("ascii"), np.uint8), np.cumsum(lengths)
    return _concat(check_ids(ids))


def split_ids(blob: np.ndarray, ascii: bool) -> list[str]:
    """Ids from ``_gather_joined``: ASCII ids (the common case) with one decode and one split."""
    if blob.shape[0] == 0:  # no ids (an id is never empty)
        return []
    if ascii:  # then latin-1 is UTF-8, and the separator decodes to the one character \xff
        return blob.tobytes().decode("latin-1").split("\xff")
    return [raw.decode("utf-8") for raw in blob.tobytes().split(b"\xff")]


def _encoded(id: object) -> bytes | None:
    """An id's UTF-8 bytes, or None for something no stored id can equal."""
    if not isinstance(id, str):
        return None
    try:
        return id.encode("utf-8")
    except UnicodeEncodeError:
        return None


class IdTable:
    """Slot -> id bytes and id -> slot for slots [0, capacity). The caller serialises writes
    against everything else, and passes the slots' ``live`` flags, which writes keep in step."""

    def __init__(self, capacity: int) -> None:
        self._offsets = np.zeros(capacity, np.uint64)
        self._lengths = np.zeros(capacity, np.uint16)
        self._hashes = np.zeros(capacity, np.uint64)
        self._buf = np.zeros(0, np.uint8)
        self._table = np.full(_MIN_TABLE, _EMPTY, np.int32)
        self._state = np.zeros(4, np.int64)

    def __len__(self) -> int:
        return int(self._state[_COUNT])

    @property
    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(buffer, offsets, lengths): what ``rank`` reads, for a compiled caller that ranks in the
        same call as it searches (the caller holds the index's lock, so they stay valid)."""
        return self._buf, self._offsets, self._lengths

    @property
    def nbytes(self) -> int:
        """Bytes of every array held (buffer and table at their allocated size)."""
        return sum(a.nbytes for a in (self._offsets, self._lengths, self._hashes, self._buf, self._table,
                                      self._state))

    def grow(self, capacity: int) -> None:
        """Room for slots [0, capacity) (never shrinks)."""
        old = self._lengths.shape[0]
        if capacity <= old:
            return
        for name in ("_offsets", "_lengths", "_hashes"):
            arr = getattr(self, name)
            grown = np.zeros(capacity, arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)

    def put(self, slots: np.ndarray, keys: np.ndarray, ends: np.ndarray, live: np.ndarray) -> None:
        """Put id i (``encode_ids``: keys[ends[i - 1]:ends[i]]) at slots[i] (int64, < capacity), in order."""
        self._reserve(keys.shape[0], ends.shape[0])
        _put_many(self._table, self._hashes, self._offsets, self._lengths, self._buf, self._state, live,
                  slots, keys, ends)

    def remove(self, ids: Sequence[object], live: np.ndarray) -> list[object]:
        """Drop the ids present; returns them (each once), in the given order."""
        raw = [_encoded(i) for i in ids]
        known = [r for r in raw if r is not None]
        if not known:
            return []
        keys, ends = _concat(known)
        found = np.zeros(len(known), np.int8)
        _remove_many(self._table, self._hashes, self._offsets, self._lengths, self._buf, self._state, live,
                     keys, ends, found)
        flags = iter(found.tolist())
        return [id for id, r in zip(ids, raw, strict=True) if r is not None and next(flags)]

    def slot(self, id: object) -> int | None:
        """The slot holding ``id``, or None."""
        raw = _encoded(id)
        if raw is None or not raw or len(raw) > 0xFFFF:
            return None
        s = _lookup(self._table, self._hashes, self._offsets, self._lengths, self._buf, raw)  # numba reads bytes
        return None if s < 0 else int(s)

    def ids(self, slots: np.ndarray) -> list[str]:
        """The ids at ``slots`` (each must hold one)."""
        if slots.shape[0] == 0:
            return []
        return split_ids(*_gather_joined(self._buf, self._offsets, self._lengths, slots.astype(np.int64, copy=False)))

    def ranked(self, slots: np.ndarray, dist: np.ndarray, k: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The k candidates (``slots`` int64, ``dist`` int32) smallest by (distance, id), in that order:
        their ids, slots and distances.

        One numba call orders them and gathers the ids' bytes, so a search's fixed cost holds no
        Python sort and only k id strings are made, whatever the number of candidates.
        """
        if slots.shape[0] == 0:
            return [], slots.astype(np.int64), dist.astype(np.int32)
        slots, dist = slots.astype(np.int64, copy=False), dist.astype(np.int32, copy=False)
        top_slots, top_dist, blob, ascii = rank(self._buf, self._offsets, self._lengths, slots, dist, k)
        return split_ids(blob, ascii), top_slots, top_dist

    def clear(self) -> None:
        """Forget every id (the capacity stays)."""
        self._lengths[:] = 0
        self._buf = np.zeros(0, np.uint8)
        self._table = np.full(_MIN_TABLE, _EMPTY, np.int32)
        self._state[:] = 0

    def _reserve(self, extra_bytes: int, extra_ids: int) -> None:
        """Room to append ``extra_bytes`` and insert ``extra_ids`` without growing inside numba."""
        state = self._state
        used = int(state[_USED])
        if used + extra_bytes > self._buf.shape[0]:
            live_bytes = used - int(state[_GARBAGE])
            # Exact for a first bulk load; with 1.5x headroom afterwards so appends amortise.
            size = live_bytes + extra_bytes if live_bytes == 0 else max(live_bytes + extra_bytes, 3 * live_bytes // 2)
            buf = np.empty(size, np.uint8)
            state[_USED] = _compact(self._buf, self._offsets, self._lengths, buf)
            state[_GARBAGE] = 0
            self._buf = buf
        if 4 * (int(state[_FILLED]) + extra_ids) > 3 * self._table.shape[0]:
            wanted = (4 * (int(state[_COUNT]) + extra_ids) + 2) // 3
            table = np.full(max(_MIN_TABLE, 1 << max(wanted - 1, 1).bit_length()), _EMPTY, np.int32)
            state[_FILLED] = _rehash(table, self._hashes, self._lengths)
            self._table = table
