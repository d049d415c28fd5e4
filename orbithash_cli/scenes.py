"""Scene metadata as the commands handle it: the client's :class:`~orbithash_client.Metadata`, plus
the parsing of times, places and boxes, merging, and how metadata is shown.

Times are UTC: an ISO-8601 time without an offset is taken as UTC. Places are WGS84 degrees,
longitude first; a box with west > east crosses the antimeridian.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from datetime import UTC, datetime

from orbithash_client.types import GeoPoint, Metadata

MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_BYTES = 256

Box = tuple[float, float, float, float]  # west, south, east, north
Point = tuple[float, float]              # lon, lat


class ValueProblem(ValueError):
    """A value that cannot be read (the message says which and why)."""


def merge(top: Metadata | None, base: Metadata | None) -> Metadata | None:
    """``top``'s fields where set, ``base``'s elsewhere (attributes merged, ``top``'s winning).

    A footprint in ``top`` without a centre brings its own middle, not ``base``'s centre.
    """
    if top is None or base is None:
        return with_center(top if base is None else base)
    merged = {f.name: getattr(top, f.name) if getattr(top, f.name) is not None else getattr(base, f.name)
              for f in fields(Metadata)}
    merged["attributes"] = {**base.attributes, **top.attributes}
    if top.footprint is not None and top.center is None:
        merged["center"] = None
    return with_center(Metadata(**merged))


def with_center(metadata: Metadata | None) -> Metadata | None:
    """The footprint's middle as the centre when only the footprint is known."""
    if metadata is not None and metadata.center is None and metadata.footprint is not None:
        return replace(metadata, center=GeoPoint(*box_center(metadata.footprint)))
    return metadata


def is_empty(metadata: Metadata | None) -> bool:
    return metadata is None or metadata == Metadata()


def parse_time(text: str) -> datetime:
    """ISO-8601 (``2024-05-01``, ``2024-05-01T10:20:00Z``, ``…+02:00``) as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueProblem(f"{text!r} is not an ISO-8601 time (e.g. 2024-05-01T10:20:00Z)") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueProblem(f"{text!r} falls outside the years 1..9999 in UTC") from exc


def parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueProblem(f"{what} {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise ValueProblem(f"{what} {text!r} is not a finite number")
    return value


def check_point(lon: float, lat: float) -> Point:
    if not -180.0 <= lon <= 180.0:
        raise ValueProblem(f"longitude {lon} is outside -180..180")
    if not -90.0 <= lat <= 90.0:
        raise ValueProblem(f"latitude {lat} is outside -90..90")
    return (lon, lat)


def check_box(west: float, south: float, east: float, north: float) -> Box:
    for lon, name in ((west, "west"), (east, "east")):
        if not -180.0 <= lon <= 180.0:
            raise ValueProblem(f"{name} {lon} is outside -180..180")
    for lat, name in ((south, "south"), (north, "north")):
        if not -90.0 <= lat <= 90.0:
            raise ValueProblem(f"{name} {lat} is outside -90..90")
    if south > north:
        raise ValueProblem(f"south {south} is north of north {north}")
    return (west, south, east, north)


def parse_box(text: str) -> Box:
    """``W,S,E,N`` in degrees."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise ValueProblem(f"{text!r} is not a box W,S,E,N (four numbers, degrees)")
    west, south, east, north = (parse_float(p, n) for p, n in zip(parts, ("west", "south", "east", "north"),
                                                                     strict=True))
    return check_box(west, south, east, north)


def box_center(box: Box) -> Point:
    west, south, east, north = box
    if west > east:  # crosses the antimeridian
        lon = (west + east + 360.0) / 2.0
        lon = lon - 360.0 if lon > 180.0 else lon
    else:
        lon = (west + east) / 2.0
    return (lon, (south + north) / 2.0)


def bounding_box(points: list[Point]) -> Box:
    """The smallest box around points; one crossing the antimeridian when that is much narrower."""
    lons = [p[0] for p in points]
    lats = [p[1] for p in points]
    west, east = min(lons), max(lons)
    if east - west > 180.0:
        east_side = [lon for lon in lons if lon >= 0]
        west_side = [lon for lon in lons if lon < 0]
        if east_side and west_side:
            west, east = min(east_side), max(west_side)
    return check_box(west, min(lats), east, max(lats))


def check_attributes(attributes: dict[str, str]) -> dict[str, str]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueProblem(f"{len(attributes)} attributes, at most {MAX_ATTRIBUTES} are kept per scene")
    for key, value in attributes.items():
        if not key:
            raise ValueProblem("an attribute has an empty name")
        for text, what in ((key, "name"), (value, "value")):
            if len(text.encode("utf-8")) > MAX_ATTRIBUTE_BYTES:
                raise ValueProblem(f"attribute {what} {text[:40]!r}… is over {MAX_ATTRIBUTE_BYTES} bytes")
    return attributes


def format_place(metadata: Metadata | None) -> str:
    """``34.0521N 118.2437W`` for a centre, else the footprint's corners, else empty."""
    if metadata is None:
        return ""
    if metadata.center is not None:
        return _lat_lon(metadata.center)
    if metadata.footprint is not None:
        w, s, e, n = metadata.footprint
        return f"{_lat_lon((w, s))} .. {_lat_lon((e, n))}"
    return ""


def _lat_lon(point: Point) -> str:
    lon, lat = point
    return f"{abs(lat):.4f}{'N' if lat >= 0 else 'S'} {abs(lon):.4f}{'E' if lon >= 0 else 'W'}"


def format_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else ""


def metadata_json(metadata: Metadata | None) -> dict:
    """The fields that are set, for JSON output."""
    if metadata is None:
        return {}
    out: dict = {"acquired": format_time(metadata.acquired) or None,
                 "center": list(metadata.center) if metadata.center else None,
                 "footprint": list(metadata.footprint) if metadata.footprint else None,
                 "sensor": metadata.sensor or None, "platform": metadata.platform or None,
                 "source_uri": metadata.source_uri or None, "attributes": dict(metadata.attributes) or None}
    return {k: v for k, v in out.items() if v is not None}
