"""Redis as the system of record for one index shard.

Every key of a shard carries the hash tag ``{shard-N}``, so a Redis Cluster keeps the shard on one
node and its Lua scripts (which touch several keys) stay legal. Codes and labels live in two
binary strings addressed by slot (SETRANGE), which a restart reads back with two GETs; the id ->
slot map is spread over 65 536 small hashes ("buckets", by the id's SHA-1) that Redis keeps in its
compact listpack encoding, so an item costs its id's bytes plus a few, not two hash-table entries;
each item's scene metadata and thumbnail are hashes by id (only for items that have them), written
and deleted by the same scripts as the code. Writes are Lua
scripts that check everything before their first write, because Redis does not roll a script
back when it fails half-way. The layout is documented in docs/redis-layout.md.

The client is built by the caller (with its retry policy, e.g. ``Retry(ExponentialBackoff(), 3)``);
this class only issues commands and turns Redis failures into OrbitHash errors.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import numpy as np
import redis

from orbithash import DeadlineExceeded, InvalidInput, Mismatch, OrbitHashError, ResourceExhausted, Unavailable
from orbithash.bits import code_bytes as _code_bytes
from orbithash.codes import as_code_array, check_bits, check_ids, check_labels

_BUCKET_CHUNK = 2_048  # id buckets per round trip in load()
_MIGRATE_CHUNK = 5_000  # entries of a version-1 id map moved per round trip
_BLOB_CHUNK = 2_000  # metadata entries per HSCAN round trip in load()
ID_BUCKETS = 65_536  # the first 4 hex digits of the id's SHA-1 name its bucket
REDIS_MAX_STRING_BYTES = 512 * 2**20  # Redis's default proto-max-bulk-len
_NAMES = ("meta", "codes", "labels", "free", "next_slot", "metadata", "thumbnails")
_V1_MAPS = ("slot_to_id", "id_to_slot")  # layout version 1: one big hash per direction (migrated at claim)

# A write's op key holds its reply until the shard's next write (a day at most; see _CHECK_META),
# then a marker for ten minutes: long enough for any copy of it still buffered in a stalled Redis.
_REPLY_TTL_MS = 86_400_000
_MARKER_TTL_MS = 600_000
_DONE, _SETTLED = "done", "settled"

# The bucket of an id, in every script: ``<namespace>:{shard-N}:ids:<0..65535>``. The prefix is the
# meta key's (KEYS[1]) without "meta"; all keys share the {shard-N} hash tag.
_BUCKET = """
local prefix = string.sub(KEYS[1], 1, -5) .. 'ids:'
local function bucket(id) return prefix .. tonumber(string.sub(redis.sha1hex(id), 1, 4), 16) end
"""

# Shared by the write scripts: KEYS = meta, codes, labels, free, next_slot, metadata, thumbnails,
# op, previous op; ARGV[1..4] = bits, model_version, code_bytes, not_after.
#
# Each write has its own op key. Its reply is kept there (``reply``), so a try the client sends again
# after a lost reply returns the first try's reply instead of running on top of its effects; a write
# whose every try went unanswered is settled through the same key (_SETTLE). The previous write of
# this shard has been answered by now: when this one writes, the previous reply shrinks to a marker
# that a late copy of it (one still buffered in Redis) reads as "nothing to do". A refused write
# writes nothing, not even these keys.
#
# A shard written by another model is refused, and so is a write that reaches Redis after
# ``not_after`` (Unix time in microseconds by Redis's clock, 0 = no limit): its caller was already
# told it failed, so it must never land.
_CHECK_META = _BUCKET + f"""
local answered = redis.call('GET', KEYS[8])
if answered == '{_DONE}' or answered == '{_SETTLED}' then
  return redis.error_reply('ORBITHASH_SETTLED this write was answered or settled already; nothing more is written')
elseif answered then
  return cmsgpack.unpack(answered)
end
local function reply(value)
  if KEYS[9] ~= KEYS[8] then redis.call('SET', KEYS[9], '{_DONE}', 'XX', 'PX', {_MARKER_TTL_MS}) end
  redis.call('SET', KEYS[8], cmsgpack.pack(value), 'PX', {_REPLY_TTL_MS})
  return value
end
""" + """
if ARGV[4] ~= '0' then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000000 + tonumber(now[2]) > tonumber(ARGV[4]) then
    return redis.error_reply('ORBITHASH_EXPIRED the write reached Redis after its deadline; nothing was written')
  end
end
local meta = redis.call('HMGET', KEYS[1], 'bits', 'model_version', 'code_bytes')
if not meta[1] then
  return redis.error_reply('ORBITHASH_MISMATCH shard is not claimed (no meta hash)')
end
if meta[1] ~= ARGV[1] or meta[2] ~= ARGV[2] or meta[3] ~= ARGV[3] then
  return redis.error_reply('ORBITHASH_MISMATCH shard holds ' .. meta[1] .. '-bit codes of model '
    .. tostring(meta[2]))
end
local cb = tonumber(ARGV[3])
"""

# ARGV[5] = the most slots the shard may have (its strings' size limit), ARGV[6] = n codes
# concatenated, ARGV[7] = n int32 little-endian labels, ARGV[8..7+n] = ids, ARGV[8+n..7+2n] =
# metadata blobs, ARGV[8+2n..7+3n] = thumbnails ('' = none: a replaced item's is removed).
# Returns {existing, slots packed as uint32 little-endian}: one bulk string parses fast.
_UPSERT = _CHECK_META + """
local codes, labels = ARGV[6], ARGV[7]
local n = (#ARGV - 7) / 3
if n ~= math.floor(n) then
  return redis.error_reply('ORBITHASH_INVALID ' .. (#ARGV - 7) .. ' arguments after the labels; ids, metadata '
    .. 'and thumbnails come one per item each')
end
if #codes ~= n * cb then
  return redis.error_reply('ORBITHASH_INVALID ' .. #codes .. ' code bytes for ' .. n .. ' ids of '
    .. cb .. ' bytes')
end
if #labels ~= n * 4 then
  return redis.error_reply('ORBITHASH_INVALID ' .. #labels .. ' label bytes for ' .. n .. ' ids')
end
local slot_of, bucket_of, existing, fresh, existed = {}, {}, 0, {}, {}
for i = 1, n do
  local id = ARGV[7 + i]
  if slot_of[id] == nil then
    local b = bucket(id)
    bucket_of[id] = b
    local found = redis.call('HGET', b, id)
    if found then
      slot_of[id] = tonumber(found)
      existing = existing + 1
      existed[id] = true
    else
      slot_of[id] = false
      fresh[#fresh + 1] = id
    end
  end
end
-- New slots past the strings' size limit would fail SETRANGE after the counter and buckets moved.
local grown = #fresh - math.min(#fresh, redis.call('LLEN', KEYS[4]))
local allocated = tonumber(redis.call('GET', KEYS[5]) or '0')
if allocated + grown > tonumber(ARGV[5]) then
  return redis.error_reply('ORBITHASH_FULL shard ' .. string.match(KEYS[1], '{shard%-(%d+)}') .. ' is full: '
    .. allocated .. ' slots of ' .. ARGV[5] .. ', and this write needs ' .. grown .. ' more')
end
-- Validation done: from here on every command is a plain write that cannot fail on its input.
local reused = {}
if #fresh > 0 then
  reused = redis.call('RPOP', KEYS[4], #fresh) or {}
end
local top = 0
if #fresh > #reused then
  top = redis.call('INCRBY', KEYS[5], #fresh - #reused) - (#fresh - #reused)
end
for f = 1, #fresh do
  local slot
  if f <= #reused then slot = tonumber(reused[f]) else slot = top + f - #reused - 1 end
  slot_of[fresh[f]] = slot
  redis.call('HSET', bucket_of[fresh[f]], fresh[f], slot)
end
-- Write codes and labels in runs of consecutive slots (fresh inserts are one run). Input order
-- is kept, so of two writes to one id the later wins.
local out = {}
local i = 1
while i <= n do
  local first = slot_of[ARGV[7 + i]]
  local j = i
  while j < n and slot_of[ARGV[8 + j]] == first + (j - i + 1) do j = j + 1 end
  redis.call('SETRANGE', KEYS[2], first * cb, string.sub(codes, (i - 1) * cb + 1, j * cb))
  redis.call('SETRANGE', KEYS[3], first * 4, string.sub(labels, (i - 1) * 4 + 1, j * 4))
  for s = i, j do out[s] = struct.pack('<I4', first + s - i) end
  i = j + 1
end
-- Metadata and thumbnails by id, the last occurrence of an id winning; an empty one removes what
-- the replaced item had (a new id has nothing to remove).
local function store_blobs(key, first_arg)
  local last, set, del = {}, {}, {}
  for i = 1, n do last[ARGV[7 + i]] = ARGV[first_arg + i] end
  for i = 1, n do
    local id = ARGV[7 + i]
    local blob = last[id]
    if blob then
      last[id] = nil
      if blob ~= '' then
        set[#set + 1] = id
        set[#set + 1] = blob
      elseif existed[id] then
        del[#del + 1] = id
      end
    end
    if #set >= 1000 or (i == n and #set > 0) then
      redis.call('HSET', key, unpack(set))
      set = {}
    end
    if #del >= 1000 or (i == n and #del > 0) then
      redis.call('HDEL', key, unpack(del))
      del = {}
    end
  end
end
store_blobs(KEYS[6], 7 + n)
store_blobs(KEYS[7], 7 + 2 * n)
return reply({existing, table.concat(out)})
"""

# ARGV[5..] = distinct ids. Returns one 0/1 per id (1 = deleted).
_DELETE = _CHECK_META + """
local zero, none = string.rep('\\0', cb), struct.pack('<i4', -1)
local out = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local b = bucket(id)
  local slot = redis.call('HGET', b, id)
  if slot then
    -- Blank the slot so that nothing read from the strings can bring the item back.
    redis.call('SETRANGE', KEYS[2], tonumber(slot) * cb, zero)
    redis.call('SETRANGE', KEYS[3], tonumber(slot) * 4, none)
    redis.call('HDEL', b, id)
    redis.call('RPUSH', KEYS[4], slot)
    redis.call('HDEL', KEYS[6], id)
    redis.call('HDEL', KEYS[7], id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return reply(out)
"""

# ARGV[5..4+n] = distinct ids, ARGV[5+n..4+2n] = their metadata blobs ('' = none). Only stored ids
# change. Returns one 0/1 per id (1 = updated).
_UPDATE_METADATA = _CHECK_META + """
local n = (#ARGV - 4) / 2
if n ~= math.floor(n) then
  return redis.error_reply('ORBITHASH_INVALID ' .. (#ARGV - 4) .. ' arguments for ids and their metadata')
end
local out = {}
for i = 1, n do
  local id, blob = ARGV[4 + i], ARGV[4 + n + i]
  if redis.call('HEXISTS', bucket(id), id) == 1 then
    if blob == '' then redis.call('HDEL', KEYS[6], id) else redis.call('HSET', KEYS[6], id, blob) end
    out[i] = 1
  else
    out[i] = 0
  end
end
return reply(out)
"""

# KEYS[1] = the op key of a write whose every try went unanswered. Returns {1, its reply} when it
# ran, else {0} after marking it so that it never will. Safe to send again: it changes nothing
# the second time.
_SETTLE = f"""
local answered = redis.call('GET', KEYS[1])
if not answered then
  redis.call('SET', KEYS[1], '{_SETTLED}', 'PX', {_MARKER_TTL_MS})
  return {{0}}
elseif answered == '{_SETTLED}' or answered == '{_DONE}' then
  return {{0}}
end
return {{1, cmsgpack.unpack(answered)}}
"""

# Same KEYS/ARGV as _CHECK_META. Returns {'ok'} or {'mismatch', bits, model_version, items}.
_CLAIM = """
local meta = redis.call('HMGET', KEYS[1], 'bits', 'model_version', 'code_bytes')
if meta[1] == ARGV[1] and meta[2] == ARGV[2] and meta[3] == ARGV[3] then
  return {'ok'}
end
-- Live items = slots ever allocated - slots freed (every bucket entry holds one allocated slot).
local items = tonumber(redis.call('GET', KEYS[5]) or '0') - redis.call('LLEN', KEYS[4])
if items > 0 then
  return {'mismatch', meta[1] or '', meta[2] or '', items}
end
-- Empty shard (so every bucket is empty), absent or other meta: start afresh for this model.
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('HSET', KEYS[1], 'bits', ARGV[1], 'model_version', ARGV[2], 'code_bytes', ARGV[3])
return {'ok'}
"""

# Buckets ARGV[1] .. ARGV[2] - 1 as one string: redis-py's pure-Python parser costs microseconds per
# reply element, so 1M id/slot pairs as 2M elements would take seconds. Ids are UTF-8, which never
# contains byte 0xFF, so 0xFF separates the fields unambiguously. KEYS[1] = meta (for the prefix).
# Returns "id 0xFF slot 0xFF id ..." ('' when the buckets are empty).
_SCAN_BUCKETS = """
local prefix = string.sub(KEYS[1], 1, -5) .. 'ids:'
local out = {}
for b = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  local entries = redis.call('HGETALL', prefix .. b)
  for i = 1, #entries do out[#out + 1] = entries[i] end
end
return table.concat(out, '\\255')
"""

# Layout version 1 kept one hash id -> slot (and its inverse); one HSCAN chunk of it moves into the
# buckets. KEYS[1] = meta, KEYS[2] = the version-1 id_to_slot; ARGV = cursor, count. Idempotent: a
# migration cut short is simply run again before the shard serves.
_MIGRATE_V1 = _BUCKET + """
local reply = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', ARGV[2])
local f = reply[2]
for i = 1, #f, 2 do redis.call('HSET', bucket(f[i]), f[i], f[i + 1]) end
return reply[1]
"""

# One HSCAN chunk of a hash of binary values as one string: per entry u16 field length, u32 value
# length (little-endian), field, value. KEYS[1] = the hash; ARGV = cursor, count.
_SCAN_BLOBS = """
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out, fields = {}, reply[2]
for i = 1, #fields, 2 do
  out[#out + 1] = struct.pack('<I2I4', #fields[i], #fields[i + 1]) .. fields[i] .. fields[i + 1]
end
return {reply[1], table.concat(out)}
"""
_BLOB_HEADER = struct.Struct("<HI")

def id_bucket_key(namespace: str, shard: int, item_id: str) -> str:
    """The Redis key of the bucket that maps ``item_id`` to its slot (what the scripts compute)."""
    return f"{namespace}:{{shard-{shard}}}:ids:{int(hashlib.sha1(item_id.encode()).hexdigest()[:4], 16)}"


def _micros(not_after: float | None) -> str:
    """A script's ``not_after`` argument: microseconds since the epoch, "0" for no limit."""
    return "0" if not_after is None else str(max(1, int(not_after * 1_000_000)))


# Errors that mean "Redis cannot serve this now", not "the request is wrong".
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError,
                redis.exceptions.ReadOnlyError, redis.exceptions.ClusterDownError,
                redis.exceptions.TryAgainError)


R = TypeVar("R")


@dataclass(frozen=True)
class PendingWrite(Generic[R]):
    """A write whose every try went unanswered: Redis may have run it, or may run it yet.
    :meth:`ShardStore.settle` finds out, and ``parse`` turns the reply it finds into the write's result."""

    op_key: str
    parse: Callable[[list], R]


class Unsettled(Unavailable):
    """Redis did not answer a write (every try timed out or lost its connection): it may have been
    applied. ``pending`` is what :meth:`ShardStore.settle` needs to find out."""

    def __init__(self, message: str, pending: PendingWrite) -> None:
        super().__init__(message)
        self.pending = pending


class Loaded(NamedTuple):
    """Every live item of a shard, by slot (see :meth:`ShardStore.load`)."""

    slots: np.ndarray  # int64, ascending
    ids: list[str]
    codes: np.ndarray  # (n, code_bytes) uint8
    labels: np.ndarray  # int32
    metadata: list[bytes]  # ``orbithash.metadata.encode`` blobs, b"" where an item has none


def _split(ids: list[str], flags: list[int]) -> tuple[list[str], list[str]]:
    """(ids whose flag is set, the others), as a script's one-flag-per-id reply says."""
    return ([i for i, f in zip(ids, flags, strict=True) if f], [i for i, f in zip(ids, flags, strict=True) if not f])


def _blobs(values: Sequence[bytes] | None, n: int, what: str) -> list[bytes]:
    """n byte strings (b"" each when ``values`` is None), as the scripts take them."""
    if values is None:
        return [b""] * n
    if len(values) != n or not all(isinstance(v, bytes | bytearray) for v in values):
        raise InvalidInput(f"{what} must be {n} byte strings, got {len(values)}")
    return [bytes(v) for v in values]


class ShardStore:
    """Durable codes, labels, ids, metadata and thumbnails of one shard, written atomically by Lua scripts."""

    def __init__(self, client: redis.Redis, shard: int, bits: int, model_version: str,
                 namespace: str = "orbithash", probe_client: redis.Redis | None = None,
                 max_string_bytes: int = REDIS_MAX_STRING_BYTES) -> None:
        """``probe_client``: for :meth:`ping`, with a short timeout and no retries, so a stopped
        Redis is noticed in about a second; ``client`` otherwise. ``max_string_bytes``: Redis's
        ``proto-max-bulk-len``, which bounds the codes and labels strings and so the shard's slots."""
        if client.get_connection_kwargs().get("decode_responses"):
            raise InvalidInput("ShardStore needs a Redis client with decode_responses=False: codes are binary")
        check_bits(bits)
        if not model_version:
            raise InvalidInput("model_version must not be empty")
        self._client = client
        self._probe = probe_client or client
        self.shard = shard
        self.bits = bits
        self.model_version = model_version
        self.code_bytes = _code_bytes(bits)
        self.max_slots = max_string_bytes // max(self.code_bytes, 4)  # labels take 4 bytes a slot
        self.namespace = namespace
        prefix = f"{namespace}:{{shard-{shard}}}"
        self._op_prefix = f"{prefix}:op:"
        self._answered: str | None = None  # op key of the last write Redis answered (see _CHECK_META)
        self.keys = {name: f"{prefix}:{name}" for name in _NAMES}
        self._key_list = list(self.keys.values())
        self._meta_args = [str(bits), model_version, str(self.code_bytes)]
        self._upsert = client.register_script(_UPSERT)
        self._delete = client.register_script(_DELETE)
        self._claim = client.register_script(_CLAIM)
        self._scan_buckets = client.register_script(_SCAN_BUCKETS)
        self._migrate_v1 = client.register_script(_MIGRATE_V1)
        self._v1_keys = [f"{prefix}:{name}" for name in _V1_MAPS]
        self._update_metadata = client.register_script(_UPDATE_METADATA)
        self._scan_blobs = client.register_script(_SCAN_BLOBS)
        self._settle = client.register_script(_SETTLE)

    @contextmanager
    def _redis(self, action: str) -> Iterator[None]:
        """One place that turns Redis failures into OrbitHash errors (and so into gRPC codes)."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise Unavailable(f"shard {self.shard}: Redis unavailable while {action}: {exc}") from exc
        except redis.ResponseError as exc:
            text = str(exc)
            if "ORBITHASH_MISMATCH" in text:
                raise Mismatch(f"shard {self.shard}: {text.split('ORBITHASH_MISMATCH', 1)[1].strip()}; "
                               f"this service runs {self.bits}-bit codes of model "
                               f"{self.model_version!r}") from exc
            if "ORBITHASH_EXPIRED" in text:
                raise DeadlineExceeded(f"shard {self.shard}: {text.split('ORBITHASH_EXPIRED', 1)[1].strip()}") from exc
            if "ORBITHASH_INVALID" in text:
                raise InvalidInput(f"shard {self.shard}: {text.split('ORBITHASH_INVALID', 1)[1].strip()}") from exc
            if "ORBITHASH_FULL" in text:
                raise ResourceExhausted(
                    f"{text.split('ORBITHASH_FULL', 1)[1].strip()} (Redis keeps a shard's codes in one string, "
                    f"at most proto-max-bulk-len = {self.max_slots * max(self.code_bytes, 4)} bytes); add "
                    "shards, or delete items to free slots") from exc
            raise Unavailable(f"shard {self.shard}: Redis refused {action}: {text}") from exc  # BUSY, NOPERM, ...

    def _write(self, action: str, script: Callable[..., list], args: list, parse: Callable[[list], R]) -> R:
        """Run a write script under a fresh op key, so that a try sent again after a lost reply gets
        the first try's reply (see _CHECK_META). When no try is answered, :class:`Unsettled` carries
        what :meth:`settle` needs; the caller must settle it before its next write."""
        op = self._op_prefix + secrets.token_hex(8)
        try:
            with self._redis(action):
                reply = script(keys=[*self._key_list, op, self._answered or op], args=args)
        except Unavailable as exc:
            if isinstance(exc.__cause__, redis.ConnectionError | redis.TimeoutError):
                raise Unsettled(f"{exc}; it may have been applied, and the shard will find out from Redis",
                                PendingWrite(op, parse)) from exc.__cause__
            raise
        self._answered = op
        return parse(reply)

    def settle(self, pending: PendingWrite[R]) -> R | None:
        """What became of a write that was never answered: its result if Redis ran it, else None;
        either way Redis will not run it later. Raises :class:`Unavailable` while Redis is away."""
        with self._redis("settling an unanswered write"):
            reply = self._settle(keys=[pending.op_key])
        self._answered = pending.op_key
        return pending.parse(reply[1]) if reply[0] else None

    def claim(self) -> None:
        """Bind the shard's keys to this model; refuse a shard that holds another model's codes.
        A shard written in layout version 1 is moved to the id buckets first."""
        with self._redis("claiming the shard"):
            self._migrate_from_v1()
            reply = self._claim(keys=self._key_list, args=self._meta_args)
        if reply[0] == b"mismatch":
            bits, version, items = reply[1].decode(), reply[2].decode(), int(reply[3])
            held = f"{bits}-bit codes of model {version!r}" if bits else "items without meta"
            raise Mismatch(f"shard {self.shard} ({self.keys['meta']}) holds {items} {held}; this service runs "
                           f"{self.bits}-bit codes of model {self.model_version!r}. Delete the shard's keys "
                           f"or point the service at another namespace before re-encoding.")

    def bucket_key(self, item_id: str) -> str:
        return id_bucket_key(self.namespace, self.shard, item_id)

    def _migrate_from_v1(self) -> None:
        """Move a version-1 id map (one big hash) into the buckets, then drop both version-1 hashes."""
        slot_to_id, id_to_slot = self._v1_keys
        if not self._client.exists(id_to_slot):
            if self._client.exists(slot_to_id):
                self._client.delete(slot_to_id)
            return
        cursor = b"0"
        while True:
            cursor = self._migrate_v1(keys=[self.keys["meta"], id_to_slot], args=[cursor, _MIGRATE_CHUNK])
            if int(cursor) == 0:
                break
        self._client.delete(id_to_slot, slot_to_id)

    def upsert(self, ids: Sequence[str], codes: np.ndarray, labels: np.ndarray, not_after: float | None = None,
               metadata: Sequence[bytes] | None = None, thumbnails: Sequence[bytes] | None = None
               ) -> tuple[np.ndarray, int]:
        """Insert or replace items atomically; returns (slot per input id, ids that already existed).

        ``metadata``: one ``orbithash.metadata.encode`` blob per item and ``thumbnails`` one JPEG
        per item (b"" or None: none); they replace what a replaced item had, in the same script
        as its code, so an item is never stored without them or with another item's.

        ``not_after`` (Unix time, seconds): Redis refuses the script if it runs later than that, so
        a write whose caller timed out while Redis was slow is never applied afterwards.

        An id keeps its slot when replaced; a new id takes a freed slot before a new one. If an id
        repeats within the call the last occurrence wins and every occurrence reports its slot.
        The existing count is of distinct ids. A try sent again after a lost reply gets the first
        try's reply (see :meth:`_write`).
        """
        n = len(ids)
        codes = np.ascontiguousarray(as_code_array(codes, self.bits, n=n))
        label_blob = check_labels(labels, n).astype("<i4").tobytes()
        encoded = check_ids(ids)  # UTF-8 here, so the client's encoding settings cannot change the keys
        blobs, thumbs = _blobs(metadata, n, "metadata"), _blobs(thumbnails, n, "thumbnails")
        if n == 0:
            return np.empty(0, np.int64), 0
        def parse(reply: list) -> tuple[np.ndarray, int]:
            existing, packed = reply
            return np.frombuffer(packed, "<u4").astype(np.int64), int(existing)

        return self._write("writing items", self._upsert, [*self._meta_args, _micros(not_after), self.max_slots,
                                                          codes.tobytes(), label_blob, *encoded, *blobs, *thumbs],
                           parse)

    def delete(self, ids: Sequence[str], not_after: float | None = None) -> tuple[list[str], list[str]]:
        """Delete items atomically; returns (deleted, missing), each id once, in input order.
        ``not_after`` as for :meth:`upsert`."""
        check_ids(ids)  # validate every id before any is used
        distinct = list(dict.fromkeys(ids))
        encoded = [item_id.encode() for item_id in distinct]
        if not distinct:
            return [], []
        return self._write("deleting items", self._delete, [*self._meta_args, _micros(not_after), *encoded],
                           lambda flags: _split(distinct, flags))

    def update_metadata(self, ids: Sequence[str], metadata: Sequence[bytes], not_after: float | None = None
                        ) -> tuple[list[str], list[str]]:
        """Replace the metadata blob (b"": none) of stored ids atomically; returns (updated, missing),
        each id once in input order, the last blob of a repeated id winning. Ids not stored are
        not created. ``not_after`` as for :meth:`upsert`."""
        check_ids(ids)
        blobs = _blobs(metadata, len(ids), "metadata")
        last = dict(zip(ids, blobs, strict=True))  # insertion order of first appearance, last value
        if not last:
            return [], []
        distinct = list(last)
        return self._write("updating metadata", self._update_metadata, [
            *self._meta_args, _micros(not_after), *[i.encode() for i in distinct], *last.values()],
            lambda flags: _split(distinct, flags))

    def thumbnails(self, ids: Sequence[str]) -> list[bytes]:
        """The stored thumbnail of each id (b"" where none is stored), read when asked for: the
        mirror keeps none, as they are the largest thing a shard holds."""
        if not ids:
            return []
        with self._redis("reading thumbnails"):
            found = self._client.hmget(self.keys["thumbnails"], [i.encode() for i in ids])
        return [t or b"" for t in found]

    def ping(self) -> bool:
        with self._redis("pinging"):
            return bool(self._probe.ping())

    def count(self) -> int:
        """Live items in the shard."""
        with self._redis("counting items"):
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.keys["next_slot"])
            pipe.llen(self.keys["free"])
            allocated, freed = pipe.execute()
        return int(allocated or 0) - int(freed)

    def load(self, progress: Callable[[int, int], None] | None = None) -> Loaded:
        """Every live item as (slots, ids, codes (n, code_bytes) uint8, labels int32, metadata blobs), by slot.

        Reads the ids in chunks of buckets and the metadata in HSCAN chunks (no multi-second block
        of Redis) and codes and labels with one GET each; thumbnails stay in Redis (see :meth:`thumbnails`). Meant for
        start-up, before this shard's process accepts writes: a write racing with the scans could
        be missed by the mirror (never by Redis).
        """
        keys = self.keys
        with self._redis("loading the shard"):
            meta = self._client.hmget(keys["meta"], "bits", "model_version", "code_bytes")
            if meta[0] is not None and [m.decode() for m in meta] != self._meta_args:
                raise Mismatch(f"shard {self.shard} holds {meta[0].decode()}-bit codes of model "
                               f"{meta[1].decode()!r}; this service runs {self.bits}-bit codes of model "
                               f"{self.model_version!r}")
            total = self.count()
            slot_parts: list[np.ndarray] = []
            id_parts: list[list[str]] = []
            done = 0
            for first in range(0, ID_BUCKETS, _BUCKET_CHUNK):
                blob = self._scan_buckets(keys=[keys["meta"]], args=[first, first + _BUCKET_CHUNK])
                if blob:
                    fields = blob.split(b"\xff")
                    slot_parts.append(np.fromstring(b" ".join(fields[1::2]), dtype=np.int64, sep=" "))
                    id_parts.append(list(map(bytes.decode, fields[0::2])))
                    done += len(id_parts[-1])
                if progress is not None:
                    progress(min(done, total), total)
            pipe = self._client.pipeline(transaction=True)
            pipe.get(keys["codes"])
            pipe.get(keys["labels"])
            code_blob, label_blob = pipe.execute()
            blob_of = self._scan_all_blobs(keys["metadata"])
        all_slots = np.concatenate(slot_parts) if slot_parts else np.empty(0, np.int64)
        all_ids = [i for part in id_parts for i in part]
        slots, first = np.unique(all_slots, return_index=True)  # ascending slots
        ids = [all_ids[i] for i in first.tolist()]
        code_blob, label_blob = code_blob or b"", label_blob or b""
        if len(slots) and (len(code_blob) < (slots[-1] + 1) * self.code_bytes
                           or len(label_blob) < (slots[-1] + 1) * 4):
            raise OrbitHashError(f"shard {self.shard}: slot {slots[-1]} lies beyond the stored codes/labels "
                                 f"({len(code_blob)} and {len(label_blob)} bytes); the Redis data is damaged")
        all_codes = np.frombuffer(code_blob, np.uint8)
        all_codes = all_codes[: len(all_codes) // self.code_bytes * self.code_bytes].reshape(-1, self.code_bytes)
        all_labels = np.frombuffer(label_blob[: len(label_blob) // 4 * 4], "<i4")
        metadata = [blob_of.get(i, b"") for i in ids]
        return Loaded(slots, ids, all_codes[slots], all_labels[slots].astype(np.int32), metadata)

    def _scan_all_blobs(self, key: str) -> dict[str, bytes]:
        """A hash of id → binary value, read in HSCAN chunks packed server-side (see _SCAN_BLOBS)."""
        out: dict[str, bytes] = {}
        cursor = b"0"
        while True:
            cursor, chunk = self._scan_blobs(keys=[key], args=[cursor, _BLOB_CHUNK])
            pos, end = 0, len(chunk)
            while pos < end:
                id_size, size = _BLOB_HEADER.unpack_from(chunk, pos)
                pos += _BLOB_HEADER.size
                out[chunk[pos:pos + id_size].decode()] = chunk[pos + id_size:pos + id_size + size]
                pos += id_size + size
            if cursor == b"0":
                return out
