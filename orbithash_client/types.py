"""What the client sends and receives: plain, immutable dataclasses (no proto messages, no numpy).

Times are timezone-aware :class:`~datetime.datetime` values, returned in UTC; coordinates are
WGS84 degrees. A field the server did not set is None (or empty), never a placeholder value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

ImageSource = bytes | str | os.PathLike[str]
"""Image bytes (JPEG, PNG or TIFF), or the path of a file holding them."""


class GeoPoint(NamedTuple):
    """A point, WGS84 degrees."""

    lon: float
    lat: float


class BoundingBox(NamedTuple):
    """A lon/lat box, WGS84 degrees; ``west > east`` means it crosses the antimeridian."""

    west: float
    south: float
    east: float
    north: float


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), got {value}")
    return value.astimezone(UTC)


def _point(value: GeoPoint | tuple[float, float] | None) -> GeoPoint | None:
    return None if value is None else GeoPoint(*value)


def _box(value: BoundingBox | tuple[float, float, float, float] | None) -> BoundingBox | None:
    return None if value is None else BoundingBox(*value)


def _text_map(value: Mapping[str, str], name: str) -> dict[str, str]:
    out = dict(value)
    for key, item in out.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"{name} must map strings to strings, got {key!r}: {item!r}")
    return out


@dataclass(frozen=True)
class Metadata:
    """What a ground station knows about a scene; every field is optional.

    ``acquired`` must be timezone-aware and is kept in UTC. ``center`` and ``footprint`` take
    plain tuples too: ``center=(lon, lat)``, ``footprint=(west, south, east, north)``.
    ``attributes``: at most 32 pairs of strings of at most 256 bytes each (the server checks the
    bounds and answers :class:`~orbithash_client.InvalidArgument` naming the item).
    """

    acquired: datetime | None = None
    center: GeoPoint | None = None
    footprint: BoundingBox | None = None
    sensor: str | None = None
    platform: str | None = None
    source_uri: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "acquired", _utc(self.acquired, "acquired"))
        object.__setattr__(self, "center", _point(self.center))
        object.__setattr__(self, "footprint", _box(self.footprint))
        object.__setattr__(self, "attributes", _text_map(self.attributes, "attributes"))


@dataclass(frozen=True)
class Filter:
    """Search filters: every condition that is set must hold (and the search's ``label``, if any).

    Applied by each shard before ranking, so the top-k is the exact top-k of the matching items.
    ``acquired_from`` is inclusive, ``acquired_until`` exclusive; ``intersects``: the item's
    footprint (its centre, when it has none) meets the box; ``center_within``: the centre lies in
    the box; ``sensors``: the item's sensor is one of these; ``attributes``: each equals the value.
    An item lacking a field never matches a condition on it.
    """

    acquired_from: datetime | None = None
    acquired_until: datetime | None = None
    intersects: BoundingBox | None = None
    center_within: BoundingBox | None = None
    sensors: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "acquired_from", _utc(self.acquired_from, "acquired_from"))
        object.__setattr__(self, "acquired_until", _utc(self.acquired_until, "acquired_until"))
        object.__setattr__(self, "intersects", _box(self.intersects))
        object.__setattr__(self, "center_within", _box(self.center_within))
        sensors = (self.sensors,) if isinstance(self.sensors, str) else tuple(self.sensors)
        if not all(isinstance(s, str) for s in sensors):
            raise TypeError(f"sensors must be strings, got {sensors!r}")
        object.__setattr__(self, "sensors", sensors)
        object.__setattr__(self, "attributes", _text_map(self.attributes, "attributes"))


@dataclass(frozen=True)
class Item:
    """One image to ingest: its id (1..256 bytes of UTF-8), the image (bytes or a path), an
    optional ground-truth label (None: the model's predicted class is stored) and metadata."""

    id: str
    image: ImageSource
    label: int | None = None
    metadata: Metadata | None = None


@dataclass(frozen=True)
class Query:
    """One query of :meth:`~orbithash_client.OrbitHashClient.search_many`: exactly one of an image
    (bytes or a path), a packed code of the served model's bit length, or a stored item's id."""

    image: ImageSource | None = None
    code: bytes | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("image", "code", "id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a query needs exactly one of image, code or id; got {given or 'none'}")


@dataclass(frozen=True)
class Encoding:
    """What the model said about an image query: its packed code, real-valued hash output ``u``,
    class probabilities and predicted class."""

    code: bytes
    u: tuple[float, ...]
    probabilities: tuple[float, ...]
    label: int
    class_name: str


@dataclass(frozen=True)
class Hit:
    """One result: ``distance`` is the Hamming distance to the query code; ``score`` the
    asymmetric re-ranking score (-u·b) when the search re-ranked, else None. ``label`` is None for
    an item stored without one; ``metadata`` and ``thumbnail`` (JPEG) are set when asked for and stored."""

    id: str
    distance: int
    label: int | None
    shard: int
    score: float | None = None
    metadata: Metadata | None = None
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class SearchResult:
    """The hits of one query, best first (ties by id); ``query`` is set for an image query.

    ``partial``: some shards failed (``failed_shards``) and their items are missing from the hits.
    Iterating a result iterates its hits.
    """

    hits: tuple[Hit, ...]
    query: Encoding | None
    model_version: str
    partial: bool = False
    failed_shards: tuple[int, ...] = ()

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


@dataclass(frozen=True)
class StoredItem:
    """An item as stored: code, label (None: none), the shard that holds it, metadata, thumbnail."""

    id: str
    code: bytes
    label: int | None
    shard: int
    metadata: Metadata | None = None
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class GetResult:
    """Found items in request order, and the ids not stored. Iterating it iterates the items."""

    items: tuple[StoredItem, ...]
    missing: tuple[str, ...]

    def __iter__(self) -> Iterator[StoredItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def by_id(self) -> dict[str, StoredItem]:
        return {item.id: item for item in self.items}


@dataclass(frozen=True)
class UpdateResult:
    """How many items got their metadata replaced; ids not stored (nothing changed for them)."""

    updated: int
    missing: tuple[str, ...]


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    missing: tuple[str, ...]


@dataclass(frozen=True)
class IngestSummary:
    """What one :meth:`~orbithash_client.OrbitHashClient.ingest` call did.

    ``received``: items sent; ``ingested``: items stored (new ids and replaced ones);
    ``replaced``: ids that existed before the call; ``per_shard``: items stored per shard;
    ``failed_shards``: shards whose writes failed (only in the summary of a failed call);
    ``batches``: streams sent; ``retries``: batches sent again after UNAVAILABLE; ``completed``:
    how many items from the start of the input were stored in whole batches, so a failed call
    can be resumed from ``items[completed:]`` (ingest replaces by id: sending more is safe).
    """

    received: int = 0
    ingested: int = 0
    replaced: int = 0
    per_shard: tuple[int, ...] = ()
    failed_shards: tuple[int, ...] = ()
    batches: int = 0
    retries: int = 0
    completed: int = 0


@dataclass(frozen=True)
class ModelInfo:
    """The served model's facts (they travel with the model)."""

    name: str
    version: str
    bits: int
    class_names: tuple[str, ...]
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str
    backbone: str


@dataclass(frozen=True)
class ShardInfo:
    shard: int
    address: str
    count: int
    healthy: bool


@dataclass(frozen=True)
class Info:
    model: ModelInfo
    shards: tuple[ShardInfo, ...]
    total: int


def as_ids(ids: str | Iterable[str]) -> list[str]:
    """A list of ids; one id given alone is one id, not its characters."""
    return [ids] if isinstance(ids, str) else list(ids)
