"""Scene metadata: what a ground station knows about an image, checked, serialised and filtered.

Transport-free (numpy and the standard library): the services convert proto messages to these
dataclasses (``orbithash_serving.convert``), the Redis store keeps :func:`encode` blobs, and an
index shard keeps :class:`MetadataColumns` beside its Hamming mirror, so a :class:`SceneFilter`
becomes a mask over slots that the search applies before ranking (the top-k is then the exact
top-k of the matching items). The rules for a valid value are checked in :func:`check_scene`
and :func:`check_filter`, here and only here, like ``orbithash.codes`` does for codes and ids.

Coordinates are WGS84 degrees; a box with west > east crosses the antimeridian. Longitudes are
compared as numbers, so -180 and 180 are different meridians. Filters compare coordinates at
float32 precision (the columns' type, about 1e-5 degrees, a metre or two): a value and a bound
that round to the same float32 are equal.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple

import numpy as np

from orbithash import InvalidInput, OrbitHashError
from orbithash.codes import shown

MAX_TEXT_BYTES = 256  # sensor, platform, source URI, attribute keys and values (UTF-8)
MAX_ATTRIBUTES = 32
MAX_FILTER_SENSORS = 256
MAX_THUMBNAIL_BYTES = 256 * 1024  # a JPEG a few hundred pixels wide is ~10-50 KB
# google.protobuf.Timestamp's range, 0001-01-01T00:00:00Z up to (not including) 10000-01-01.
MIN_TIME = -62_135_596_800.0
END_TIME = 253_402_300_800.0

FORMAT_VERSION = 1
_HAS_ACQUIRED, _HAS_CENTER, _HAS_FOOTPRINT = 1, 2, 4


class LonLat(NamedTuple):
    lon: float
    lat: float


class Box(NamedTuple):
    """A lon/lat box; west > east means it crosses the antimeridian."""

    west: float
    south: float
    east: float
    north: float


@dataclass(frozen=True)
class SceneMeta:
    """One item's metadata; every field is optional (None or "" = not known)."""

    acquired: float | None = None  # acquisition time, UTC seconds since the Unix epoch
    center: LonLat | None = None
    footprint: Box | None = None
    sensor: str = ""
    platform: str = ""
    source_uri: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return (self.acquired is None and self.center is None and self.footprint is None and not self.sensor
                and not self.platform and not self.source_uri and not self.attributes)


@dataclass(frozen=True)
class SceneFilter:
    """A search filter: every condition that is set must hold. Items lacking a field never match a
    condition on it; ``intersects`` uses an item's centre when it has no footprint."""

    acquired_from: float | None = None  # inclusive
    acquired_until: float | None = None  # exclusive
    intersects: Box | None = None  # footprint intersects the box
    center_within: Box | None = None  # centre inside the box
    sensors: frozenset[str] = frozenset()  # sensor is one of these ("" = items without one)
    attributes: Mapping[str, str] = field(default_factory=dict)  # each attribute equals the value

    @property
    def is_empty(self) -> bool:
        return (self.acquired_from is None and self.acquired_until is None and self.intersects is None
                and self.center_within is None and not self.sensors and not self.attributes)


# -- checks -----------------------------------------------------------------------------------------


def _check_time(value: object, what: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not MIN_TIME <= value < END_TIME:
        raise InvalidInput(f"{where}: {what} {value!r} is not a time in years 1..9999 (UTC seconds)")


def _check_lon(value: object, what: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -180.0 <= value <= 180.0:
        raise InvalidInput(f"{where}: {what} longitude {value!r} is outside -180..180")


def _check_lat(value: object, what: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -90.0 <= value <= 90.0:
        raise InvalidInput(f"{where}: {what} latitude {value!r} is outside -90..90")


def _check_box(box: object, what: str, where: str) -> None:
    if not isinstance(box, tuple) or len(box) != 4:
        raise InvalidInput(f"{where}: {what} must be (west, south, east, north), got {type(box).__name__}")
    west, south, east, north = box
    _check_lon(west, f"{what} west", where)
    _check_lon(east, f"{what} east", where)
    _check_lat(south, f"{what} south", where)
    _check_lat(north, f"{what} north", where)
    if south > north:
        raise InvalidInput(f"{where}: {what} south {south!r} is greater than its north {north!r}")


def _check_text(value: object, what: str, where: str) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: {what} must be a string, got {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{where}: {what} is not valid UTF-8 ({exc.reason})") from exc
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(f"{where}: {what} {shown(value)} has {size} bytes, at most {MAX_TEXT_BYTES} are allowed")


def _check_attributes(attributes: object, where: str) -> None:
    if not isinstance(attributes, Mapping):
        raise InvalidInput(f"{where}: attributes must be a mapping of strings, got {type(attributes).__name__}")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"{where}: {len(attributes)} attributes, at most {MAX_ATTRIBUTES} are allowed")
    for key, value in attributes.items():
        _check_text(key, "attribute key", where)
        if not key:
            raise InvalidInput(f"{where}: an attribute key is empty")
        _check_text(value, f"attribute {shown(key)}", where)


def check_scene(meta: SceneMeta, where: str) -> SceneMeta:
    """``meta`` if every field is valid, else InvalidInput naming ``where`` (e.g. "item 3 (id 'x')")."""
    if not isinstance(meta, SceneMeta):
        raise InvalidInput(f"{where}: metadata must be a SceneMeta, got {type(meta).__name__}")
    if meta.acquired is not None:
        _check_time(meta.acquired, "acquired", where)
    if meta.center is not None:
        if not isinstance(meta.center, tuple) or len(meta.center) != 2:
            raise InvalidInput(f"{where}: center must be (lon, lat), got {type(meta.center).__name__}")
        _check_lon(meta.center[0], "center", where)
        _check_lat(meta.center[1], "center", where)
    if meta.footprint is not None:
        _check_box(meta.footprint, "footprint", where)
    for name in ("sensor", "platform", "source_uri"):
        _check_text(getattr(meta, name), name, where)
    _check_attributes(meta.attributes, where)
    return meta


def check_filter(scene_filter: SceneFilter, where: str = "filter") -> SceneFilter:
    """``scene_filter`` if its bounds are valid (the same rules as for metadata), else InvalidInput."""
    f = scene_filter
    if f.acquired_from is not None:
        _check_time(f.acquired_from, "acquired_from", where)
    if f.acquired_until is not None:
        _check_time(f.acquired_until, "acquired_until", where)
    if f.intersects is not None:
        _check_box(f.intersects, "intersects", where)
    if f.center_within is not None:
        _check_box(f.center_within, "center_within", where)
    if len(f.sensors) > MAX_FILTER_SENSORS:
        raise InvalidInput(f"{where}: {len(f.sensors)} sensors, at most {MAX_FILTER_SENSORS} are allowed")
    for sensor in f.sensors:
        _check_text(sensor, "sensor", where)
    _check_attributes(f.attributes, where)
    return f


def check_thumbnail(data: object, where: str) -> bytes:
    """A thumbnail's bytes (empty: none), at most MAX_THUMBNAIL_BYTES."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidInput(f"{where}: the thumbnail must be bytes, got {type(data).__name__}")
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise InvalidInput(f"{where}: the thumbnail has {len(data)} bytes, at most {MAX_THUMBNAIL_BYTES} are allowed")
    return bytes(data)


# -- serialisation ----------------------------------------------------------------------------------
# Version 1: u8 version, u8 flags (1 acquired, 2 center, 4 footprint), then the float64 fields that
# are set (acquired; lon, lat; west, south, east, north), then sensor, platform and source_uri, then
# u8 attribute count and key, value pairs; every string is u16 length + UTF-8, little-endian
# throughout. Empty metadata is the empty blob. Float64 keeps every value exactly.

_U16 = struct.Struct("<H")
_NUMBERS = [struct.Struct(f"<{n}d") for n in range(8)]  # by how many of the 7 float64 fields are set


def _put_text(parts: list[bytes], text: str) -> None:
    raw = text.encode("utf-8")
    parts += [_U16.pack(len(raw)), raw]


def encode(meta: SceneMeta) -> bytes:
    """The Redis blob of checked metadata (b"" when empty)."""
    if meta.is_empty:
        return b""
    flags = ((_HAS_ACQUIRED if meta.acquired is not None else 0) | (_HAS_CENTER if meta.center is not None else 0)
             | (_HAS_FOOTPRINT if meta.footprint is not None else 0))
    numbers = [*(() if meta.acquired is None else (meta.acquired,)), *(meta.center or ()), *(meta.footprint or ())]
    parts = [bytes((FORMAT_VERSION, flags)), _NUMBERS[len(numbers)].pack(*numbers)]
    for text in (meta.sensor, meta.platform, meta.source_uri):
        _put_text(parts, text)
    parts.append(bytes((len(meta.attributes),)))
    for key, value in meta.attributes.items():
        _put_text(parts, key)
        _put_text(parts, value)
    return b"".join(parts)



def decode(blob: bytes) -> SceneMeta:
    """Metadata from an :func:`encode` blob; OrbitHashError for a damaged or unknown one."""
    if not blob:
        return SceneMeta()
    if blob[0] != FORMAT_VERSION:
        raise OrbitHashError(f"metadata blob of format version {blob[0]}; this build reads {FORMAT_VERSION}")
    try:
        flags = blob[1]
        if flags & ~(_HAS_ACQUIRED | _HAS_CENTER | _HAS_FOOTPRINT):
            raise ValueError(f"unknown flags {flags:#x}")
        count = (flags & _HAS_ACQUIRED) + 2 * bool(flags & _HAS_CENTER) + 4 * bool(flags & _HAS_FOOTPRINT)
        numbers = _NUMBERS[count].unpack_from(blob, 2)
        pos, size = 2 + 8 * count, len(blob)
        texts: list[str] = []
        read, wanted = 0, 3  # sensor, platform, source URI; then the attribute count says how many follow
        while read < wanted:
            end = pos + 2 + (blob[pos] | blob[pos + 1] << 8)  # u16 little-endian length, inlined: decode is hot
            if end > size:
                raise ValueError("a string runs past the end")
            texts.append(blob[pos + 2:end].decode("utf-8"))
            pos, read = end, read + 1
            if read == 3:
                wanted += 2 * blob[pos]
                pos += 1
        if pos != size:
            raise ValueError(f"{size - pos} bytes left over")
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise OrbitHashError(f"damaged metadata blob ({len(blob)} bytes): {exc}") from exc
    at = 1 if flags & _HAS_ACQUIRED else 0
    return SceneMeta(numbers[0] if at else None, LonLat(*numbers[at:at + 2]) if flags & _HAS_CENTER else None,
                     Box(*numbers[-4:]) if flags & _HAS_FOOTPRINT else None, texts[0], texts[1], texts[2],
                     dict(zip(texts[3::2], texts[4::2], strict=True)))


# -- the columnar store of a shard ------------------------------------------------------------------


def _within(lon: np.ndarray, lat: np.ndarray, box: Box) -> np.ndarray:
    """Points inside a box (edges included); NaN points are not."""
    west, south, east, north = (np.float32(v) for v in box)
    inside_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
    inside_lon &= lat >= south
    inside_lon &= lat <= north
    return inside_lon


def _intersects(footprints: np.ndarray, box: Box) -> np.ndarray:
    """Footprints (4, n: west, south, east, north rows) that share a point with ``box``; NaN ones do not.

    Two longitude arcs meet exactly when one holds the other's western edge, for arcs crossing the
    antimeridian too. An arc from w east to e holds x when w <= x <= e, or, when it crosses
    (w > e), when x >= w or x <= e.
    """
    west, south, east, north = (np.float32(v) for v in box)
    w, s, e, n = footprints
    after, before = w <= west, e >= west  # does the footprint's arc hold the box's west edge?
    holds = (after & before) | ((w > e) & (after | before))
    edge_in_box = (w >= west) & (w <= east) if west <= east else (w >= west) | (w <= east)
    holds |= edge_in_box  # ... or the box's arc the footprint's west edge
    holds &= s <= north
    holds &= n >= south
    return holds


def _passes_when_empty(f: SceneFilter) -> bool:
    """Whether an item without metadata passes: only a filter on sensors that admits "" lets it."""
    return (f.acquired_from is None and f.acquired_until is None and f.intersects is None
            and f.center_within is None and not f.attributes and (not f.sensors or "" in f.sensors))


class _Dense:
    """A posting of many slots: beyond ~1/64 of the slots a bitmap is smaller than a set (~60 bytes
    a member) and turns into a mask in microseconds instead of milliseconds."""

    __slots__ = ("bits", "count")

    def __init__(self, members: set[int], capacity: int) -> None:
        self.bits = np.zeros(capacity, bool)
        self.bits[np.fromiter(members, np.int64, len(members))] = True
        self.count = len(members)


Posting = int | set[int] | _Dense  # a bare int for one slot: most values are rare, and a set costs 200+ bytes


class _Attributes:
    """The inverted attribute index: key → value → the slots holding that pair."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._postings: dict[str, dict[str, Posting]] = {}

    def _dense_from(self) -> int:
        return max(256, self.capacity // 64)

    def add(self, key: str, value: str, slot: int) -> None:
        values = self._postings.setdefault(key, {})
        held = values.get(value)
        if held is None:
            values[value] = slot
        elif isinstance(held, int):
            values[value] = {held, slot}
        elif isinstance(held, set):
            held.add(slot)
            if len(held) > self._dense_from():
                values[value] = _Dense(held, self.capacity)
        elif not held.bits[slot]:
            held.bits[slot] = True
            held.count += 1

    def discard(self, key: str, value: str, slot: int) -> None:
        values = self._postings.get(key, {})
        held = values.get(value)
        if isinstance(held, set):
            held.discard(slot)
            if len(held) == 1:
                values[value] = next(iter(held))
        elif isinstance(held, _Dense):
            if held.bits[slot]:
                held.bits[slot] = False
                held.count -= 1
            if not held.count:
                del values[value]
            elif held.count < self._dense_from() // 4:  # back to a set, with hysteresis against flapping
                values[value] = set(np.flatnonzero(held.bits).tolist())
        elif held == slot:
            del values[value]
        if not values:
            self._postings.pop(key, None)

    def grow(self, capacity: int) -> None:
        for values in self._postings.values():
            for held in values.values():
                if isinstance(held, _Dense):
                    held.bits = np.concatenate([held.bits, np.zeros(capacity - self.capacity, bool)])
        self.capacity = capacity

    def mask(self, wanted: Mapping[str, str], n: int) -> np.ndarray:
        """Slots in [0, n) holding every wanted pair."""
        keep = np.ones(n, bool)
        for key, value in wanted.items():
            held = self._postings.get(key, {}).get(value)
            if held is None:
                return np.zeros(n, bool)
            if isinstance(held, _Dense):
                keep &= held.bits[:n]
                continue
            members = np.fromiter([held] if isinstance(held, int) else held, np.int64)
            found = np.zeros(n, bool)
            found[members[members < n]] = True
            keep &= found
        return keep


class MetadataColumns:
    """The metadata of a shard's slots: numpy columns and an inverted attribute index, for masks.

    Numbers live in arrays indexed by slot (NaN = unknown), so a filter is a few vector
    comparisons; the sensor is a code into a small dictionary; attributes are an inverted index
    key → value → slots (an int, a set, or a bitmap once a value is common). Each slot also keeps
    its :func:`encode` blob, the one copy from which :meth:`get` returns the metadata whole
    (platform, source URI, attributes) and from which replacing or removing a slot learns which
    postings to drop. Not thread-safe: the shard changes it under the lock of its Hamming mirror.
    """

    def __init__(self, capacity: int = 1024) -> None:
        capacity = max(int(capacity), 1)
        self._acquired = np.full(capacity, np.nan)
        self._center = np.full((2, capacity), np.nan, np.float32)  # lon, lat rows: contiguous for the masks
        self._footprint = np.full((4, capacity), np.nan, np.float32)  # west, south, east, north rows
        self._sensor = np.zeros(capacity, np.int32)
        self._sensor_codes: dict[str, int] = {"": 0}
        self._attributes = _Attributes(capacity)
        self._blobs: list[bytes | None] = [None] * capacity

    @property
    def capacity(self) -> int:
        return self._acquired.shape[0]

    def put(self, slots: Sequence[int] | np.ndarray, metas: Sequence[SceneMeta],
            blobs: Sequence[bytes] | None = None) -> None:
        """Set each slot's metadata (replacing what it held); of repeated slots the last wins.

        ``blobs``: the metas already encoded (the store's copy), to save encoding them again.
        """
        slots = np.asarray(slots, np.int64).reshape(-1)
        if len(metas) != slots.shape[0] or (blobs is not None and len(blobs) != len(metas)):
            raise InvalidInput(f"{len(metas)} metadata for {slots.shape[0]} slots")
        if not len(metas):
            return
        if int(slots.min()) < 0:
            raise InvalidInput("slots must be >= 0")
        self._grow(int(slots.max()) + 1)
        _, last_rev = np.unique(slots[::-1], return_index=True)
        kept = np.sort(slots.shape[0] - 1 - last_rev).tolist()  # the last write to each slot, in order
        slots = slots[kept]
        metas = [metas[j] for j in kept]
        blobs = [encode(m) for m in metas] if blobs is None else [blobs[j] for j in kept]
        self._forget(slots)
        nan2, nan4 = (np.nan,) * 2, (np.nan,) * 4
        # The numbers in one vector assignment per column, from flat iterators: per-slot numpy writes
        # and nested lists cost a microsecond or more per item, a tenth of a shard's start-up.
        n = len(metas)
        self._acquired[slots] = np.fromiter((np.nan if m.acquired is None else m.acquired for m in metas),
                                            np.float64, n)
        self._center[:, slots] = np.fromiter(chain.from_iterable(m.center or nan2 for m in metas),
                                             np.float64, 2 * n).reshape(n, 2).T
        self._footprint[:, slots] = np.fromiter(chain.from_iterable(m.footprint or nan4 for m in metas),
                                                np.float64, 4 * n).reshape(n, 4).T
        codes = self._sensor_codes
        self._sensor[slots] = [codes.setdefault(m.sensor, len(codes)) for m in metas]
        for slot, meta, blob in zip(slots.tolist(), metas, blobs, strict=True):
            for key, value in meta.attributes.items():
                self._attributes.add(key, value, slot)
            self._blobs[slot] = blob or None

    def remove(self, slots: Sequence[int] | np.ndarray) -> None:
        """Forget the metadata of slots (a deleted item's)."""
        slots = np.asarray(slots, np.int64).reshape(-1)
        self._forget(slots[(slots >= 0) & (slots < self.capacity)])

    def get(self, slot: int) -> SceneMeta:
        """A slot's metadata (empty when it has none)."""
        blob = self._blobs[slot] if 0 <= slot < self.capacity else None
        return decode(blob) if blob else SceneMeta()

    def mask(self, scene_filter: SceneFilter, capacity: int) -> np.ndarray:
        """Bool per slot in [0, capacity): whether the slot's metadata passes every condition."""
        f = scene_filter
        n = min(int(capacity), self.capacity)
        keep = np.ones(n, bool)
        if f.acquired_from is not None:
            keep &= self._acquired[:n] >= f.acquired_from
        if f.acquired_until is not None:
            keep &= self._acquired[:n] < f.acquired_until
        lon, lat = self._center[0, :n], self._center[1, :n]
        if f.center_within is not None:
            keep &= _within(lon, lat, f.center_within)
        if f.intersects is not None:
            footprints = self._footprint[:, :n]
            meets = _intersects(footprints, f.intersects)
            meets |= np.isnan(footprints[0]) & _within(lon, lat, f.intersects)  # no footprint: the centre
            keep &= meets
        if f.sensors:
            codes = [self._sensor_codes[s] for s in f.sensors if s in self._sensor_codes]
            sensor = self._sensor[:n]
            if len(codes) <= 4:  # a comparison per code is faster than a gather through a table
                found = np.zeros(n, bool)
                for code in codes:
                    found |= sensor == code
            else:
                table = np.zeros(len(self._sensor_codes), bool)
                table[codes] = True
                found = table[sensor]
            keep &= found
        if f.attributes:
            keep &= self._attributes.mask(f.attributes, n)
        out = np.full(max(int(capacity), 0), _passes_when_empty(f))  # slots never put hold no metadata
        out[:n] = keep
        return out

    def _forget(self, slots: np.ndarray) -> None:
        """Clear slots: their postings (read from their blobs), blobs and numbers."""
        blobs = self._blobs
        for slot in slots.tolist():
            blob = blobs[slot]
            if blob is not None:
                for key, value in decode(blob).attributes.items():
                    self._attributes.discard(key, value, slot)
                blobs[slot] = None
        self._acquired[slots] = np.nan
        self._center[:, slots] = np.nan
        self._footprint[:, slots] = np.nan
        self._sensor[slots] = 0

    def _grow(self, needed: int) -> None:
        old = self.capacity
        if needed <= old:
            return
        new = max(needed, 2 * old)
        self._acquired = np.concatenate([self._acquired, np.full(new - old, np.nan)])
        self._center = np.concatenate([self._center, np.full((2, new - old), np.nan, np.float32)], axis=1)
        self._footprint = np.concatenate([self._footprint, np.full((4, new - old), np.nan, np.float32)], axis=1)
        self._sensor = np.concatenate([self._sensor, np.zeros(new - old, np.int32)])
        self._blobs.extend([None] * (new - old))
        self._attributes.grow(new)
