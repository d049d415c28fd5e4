"""Scene metadata from sidecar files: CSV or GeoJSON, matched to images by id or by path.

CSV (``.csv``): a header row, then one row per image. Columns (all but one of id/path optional,
empty cells mean "not known"):

- ``id`` (the item id, prefix included) or ``path`` (the image's path relative to the ingest
  root, i.e. the id without ``--id-prefix``; a path relative to the sidecar's folder works too);
- ``acquired`` ISO-8601 (no offset: UTC);
- ``lon``, ``lat`` the scene centre; ``west``, ``south``, ``east``, ``north`` its footprint (all
  four or none; the centre defaults to the footprint's middle);
- ``sensor``, ``platform``, ``source_uri``;
- ``attr:<name>`` free attributes (at most 32 per scene, 256 bytes each).

GeoJSON (``.geojson`` or ``.json``): a FeatureCollection (or one Feature); ``properties.id`` or
``properties.path`` as above; ``geometry`` a Point (the centre) or a Polygon / MultiPolygon (the
footprint is its bounding box, the centre the box's middle); ``properties`` ``acquired``,
``sensor``, ``platform``, ``source_uri``, ``attr:<name>`` keys or an ``attributes`` object.

Other columns or properties are listed once as ignored; a column named twice is refused. Any
unreadable value makes the whole file a usage error naming its line (CSV) or feature (GeoJSON):
nothing is sent until it is fixed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from orbithash_cli import UsageError
from orbithash_cli.scenes import (
    Point,
    ValueProblem,
    bounding_box,
    check_attributes,
    check_box,
    check_point,
    parse_float,
    parse_time,
    with_center,
)
from orbithash_client.types import Metadata

CSV_COLUMNS = ("id", "path", "acquired", "lon", "lat", "west", "south", "east", "north", "sensor", "platform",
               "source_uri")
GEOJSON_PROPERTIES = ("id", "path", "acquired", "sensor", "platform", "source_uri", "attributes")
ATTR_PREFIX = "attr:"
_MAX_SHOWN_PROBLEMS = 10


@dataclass
class Entry:
    metadata: Metadata
    where: str  # "file.csv line 4" / "file.geojson feature 3"
    used: bool = False


@dataclass
class Sidecar:
    """Scenes by item id and by path; :meth:`lookup` marks what it found so the rest can be reported."""

    by_id: dict[str, Entry] = field(default_factory=dict)
    by_path: dict[str, Entry] = field(default_factory=dict)
    by_file: dict[Path, Entry] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)  # columns / properties not understood

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_path)

    def lookup(self, item_id: str, rel: str, file: Path | None) -> Metadata | None:
        for entry in (self.by_id.get(item_id), self.by_path.get(rel),
                      self.by_file.get(file.resolve()) if file is not None else None):
            if entry is not None:
                entry.used = True
                return entry.metadata
        return None

    def unused(self) -> list[str]:
        """Where the entries that matched no image are."""
        seen: set[int] = set()
        out = []
        for entry in [*self.by_id.values(), *self.by_path.values()]:
            if not entry.used and id(entry) not in seen:
                seen.add(id(entry))
                out.append(entry.where)
        return out


def load_sidecars(paths: Iterable[Path]) -> Sidecar:
    sidecar = Sidecar()
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such metadata file")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            _load_csv(path, sidecar)
        elif suffix in (".geojson", ".json"):
            _load_geojson(path, sidecar)
        else:
            raise UsageError(f"{path}: a metadata sidecar is a .csv or a .geojson file")
    return sidecar


def _add(sidecar: Sidecar, path: Path, key_id: str, key_path: str, metadata: Metadata, where: str) -> None:
    entry = Entry(metadata, where)
    if key_id:
        if key_id in sidecar.by_id:
            raise ValueProblem(f"id {key_id!r} is already described at {sidecar.by_id[key_id].where}")
        sidecar.by_id[key_id] = entry
        return
    rel = PurePosixPath(key_path.replace("\\", "/")).as_posix()
    if rel in sidecar.by_path:
        raise ValueProblem(f"path {key_path!r} is already described at {sidecar.by_path[rel].where}")
    sidecar.by_path[rel] = entry
    on_disk = path.parent / key_path
    if on_disk.is_file():
        sidecar.by_file[on_disk.resolve()] = entry


def _refuse(path: Path, problems: list[str]) -> None:
    if problems:
        shown = problems[:_MAX_SHOWN_PROBLEMS]
        more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise UsageError(f"{path}: {len(problems)} problem(s) in the metadata sidecar:\n  "
                         + "\n  ".join(shown) + more)


# -- CSV -------------------------------------------------------------------------------------------

def _load_csv(path: Path, sidecar: Sidecar) -> None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the metadata sidecar ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise UsageError(f"{path}: cannot read the CSV sidecar's header ({exc})") from exc
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise UsageError(f"{path}: column(s) repeated in the header: {', '.join(repeated)} "
                         "(each may appear once; which one was meant cannot be told)")
    if "id" not in header and "path" not in header:
        raise UsageError(f"{path}: the CSV sidecar needs an 'id' or a 'path' column (header: {', '.join(header)})")
    reader.fieldnames = header
    sidecar.ignored.update(h for h in header if h not in CSV_COLUMNS and not h.startswith(ATTR_PREFIX))
    problems: list[str] = []
    try:
        _read_rows(path, reader, sidecar, problems)
    except csv.Error as exc:  # a cell over csv's field limit (128 KiB), a NUL byte, ...
        raise UsageError(f"{path}: cannot read the CSV sidecar at line {reader.line_num + 1} ({exc})") from exc
    _refuse(path, problems)


def _read_rows(path: Path, reader: csv.DictReader, sidecar: Sidecar, problems: list[str]) -> None:
    for row in reader:
        where = f"{path.name} line {reader.line_num}"
        cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if not any(cells.values()):
            continue
        try:
            metadata = _csv_metadata(cells)
            if not cells.get("id") and not cells.get("path"):
                raise ValueProblem("neither id nor path is given")
            _add(sidecar, path, cells.get("id", ""), cells.get("path", ""), metadata, where)
        except ValueProblem as exc:
            problems.append(f"line {reader.line_num}: {exc}")


def _csv_metadata(cells: dict[str, str]) -> Metadata:
    acquired = parse_time(cells["acquired"]) if cells.get("acquired") else None
    center = None
    if cells.get("lon") or cells.get("lat"):
        if not (cells.get("lon") and cells.get("lat")):
            raise ValueProblem("lon and lat go together")
        center = check_point(parse_float(cells["lon"], "lon"), parse_float(cells["lat"], "lat"))
    footprint = None
    corners = [cells.get(c, "") for c in ("west", "south", "east", "north")]
    if any(corners):
        if not all(corners):
            raise ValueProblem("west, south, east and north go together")
        footprint = check_box(*(parse_float(v, n) for v, n in zip(corners, ("west", "south", "east", "north"),
                                                                   strict=True)))
    attributes = check_attributes({k[len(ATTR_PREFIX):]: v for k, v in cells.items()
                                   if k.startswith(ATTR_PREFIX) and v})
    return with_center(Metadata(acquired, center, footprint, cells.get("sensor") or None,
                                cells.get("platform") or None, cells.get("source_uri") or None, attributes))


# -- GeoJSON ---------------------------------------------------------------------------------------

def _load_geojson(path: Path, sidecar: Sidecar) -> None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the GeoJSON sidecar ({exc})") from exc
    except RecursionError as exc:
        raise UsageError(f"{path}: cannot read the GeoJSON sidecar (nested too deeply)") from exc
    if isinstance(document, dict) and document.get("type") == "Feature":
        features = [document]
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
    else:
        raise UsageError(f"{path}: a GeoJSON sidecar is a FeatureCollection (or one Feature)")
    if not isinstance(features, list):
        raise UsageError(f"{path}: 'features' is not a list")
    problems = []
    for number, feature in enumerate(features, 1):
        where = f"{path.name} feature {number}"
        try:
            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                raise ValueProblem("not a Feature")
            properties = feature.get("properties") or {}
            if not isinstance(properties, dict):
                raise ValueProblem("properties is not an object")
            sidecar.ignored.update(k for k in properties
                                   if k not in GEOJSON_PROPERTIES and not k.startswith(ATTR_PREFIX))
            metadata = _feature_metadata(properties, feature.get("geometry"))
            key_id, key_path = str(properties.get("id") or ""), str(properties.get("path") or "")
            if not key_id and not key_path:
                raise ValueProblem("neither properties.id nor properties.path is given")
            _add(sidecar, path, key_id, key_path, metadata, where)
        except ValueProblem as exc:
            problems.append(f"feature {number}: {exc}")
    _refuse(path, problems)


def _feature_metadata(properties: dict, geometry: object) -> Metadata:
    acquired = parse_time(str(properties["acquired"])) if properties.get("acquired") else None
    attributes = properties.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ValueProblem("properties.attributes is not an object")
    attributes = {str(k): str(v) for k, v in attributes.items()}
    attributes.update({k[len(ATTR_PREFIX):]: str(v) for k, v in properties.items()
                       if k.startswith(ATTR_PREFIX) and v not in (None, "")})
    center, footprint = _geometry(geometry)
    return with_center(Metadata(acquired, center, footprint, _text(properties.get("sensor")),
                                _text(properties.get("platform")), _text(properties.get("source_uri")),
                                check_attributes(attributes)))


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def _position(value: object) -> Point:
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise ValueProblem(f"position {value!r} is not [lon, lat]")
    lon, lat = (parse_float(str(v), n) for v, n in zip(value[:2], ("lon", "lat"), strict=True))
    return check_point(lon, lat)


def _geometry(geometry: object) -> tuple[Point | None, tuple[float, float, float, float] | None]:
    if geometry is None:
        return None, None
    if not isinstance(geometry, dict):
        raise ValueProblem("geometry is not an object")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        return _position(coordinates), None
    if kind == "Polygon":
        polygons = [_rings(coordinates, kind)]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list):
            raise ValueProblem(f"the {kind}'s coordinates are not a list of polygons")
        polygons = [_rings(polygon, kind) for polygon in coordinates]
    else:
        raise ValueProblem(f"geometry type {kind!r}: only Point, Polygon and MultiPolygon are understood")
    rings = [(number == 0, [_position(p) for p in ring]) for polygon in polygons for number, ring in enumerate(polygon)]
    points = [p for outer, ring in rings if outer for p in ring]  # holes are checked; the outer rings give the box
    if not points:
        raise ValueProblem(f"the {kind} has no coordinates")
    return None, bounding_box(points)


def _rings(polygon: object, kind: str) -> list[list]:
    """A polygon's rings, each a list (of positions, checked when read)."""
    if not isinstance(polygon, list) or not polygon or not all(isinstance(ring, list) for ring in polygon):
        raise ValueProblem(f"the {kind}'s coordinates are not lists of rings of [lon, lat] positions")
    return polygon
