"""Scene metadata an image carries itself: GeoTIFF georeferencing and EXIF DateTimeOriginal.

GeoTIFF: the first image's ``ModelTiepointTag`` (33922) and ``ModelPixelScaleTag`` (33550), or a
``ModelTransformationTag`` (34264) without rotation, give the footprint; the ``GeoKeyDirectoryTag``
(34735) says in which CRS. The footprint is stored only when that CRS is geographic EPSG:4326
(WGS84 longitude/latitude, what the API's boxes are in); any other CRS (a UTM zone, NAD83, a
user-defined one) is left alone and said so in a note: converting it would need a projection
library a ground-station client does not carry. ``PixelIsPoint`` rasters are shifted by half a
pixel to their outer edges.

The tags are read by a small reader of TIFF's directory (classic and BigTIFF, both byte orders),
so that a 16-bit or many-band scene the preview library cannot open still gives its place.

EXIF: ``DateTimeOriginal`` (with ``OffsetTimeOriginal`` when present; otherwise the time is taken as
UTC) through Pillow.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from orbithash_cli.scenes import Box, ValueProblem, check_box, merge, with_center
from orbithash_client.types import Metadata

IMAGE_WIDTH, IMAGE_LENGTH = 256, 257
MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION, GEO_KEY_DIRECTORY = 33550, 33922, 34264, 34735
GT_MODEL_TYPE, GT_RASTER_TYPE, GEOGRAPHIC_TYPE, PROJECTED_CS_TYPE = 1024, 1025, 2048, 3072
MODEL_TYPE_PROJECTED, MODEL_TYPE_GEOGRAPHIC = 1, 2
RASTER_PIXEL_IS_POINT = 2
WGS84 = 4326
USER_DEFINED = 32767
EXIF_IFD, DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x8769, 36867, 36881

# TIFF field type → (struct format of one value, its size).
_TYPES = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1), 7: ("B", 1),
          8: ("h", 2), 9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8), 16: ("Q", 8), 17: ("q", 8),
          18: ("Q", 8)}
_MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Embedded:
    """What an image says about itself, and anything worth telling the operator about it."""

    metadata: Metadata | None = None
    note: str = ""


def tiff_tags(data: bytes, wanted: frozenset[int]) -> dict[int, tuple]:
    """The ``wanted`` tags of a TIFF's first directory as tuples of values ({} when not a TIFF)."""
    if data[:4] in (b"II*\x00", b"II+\x00"):
        order = "<"
    elif data[:4] in (b"MM\x00*", b"MM\x00+"):
        order = ">"
    else:
        return {}
    big = data[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:
            offset = struct.unpack_from(order + "Q", data, 8)[0]
            count = struct.unpack_from(order + "Q", data, offset)[0]
            first, entry_size, count_fmt, inline = offset + 8, 20, "Q", 8
        else:
            offset = struct.unpack_from(order + "I", data, 4)[0]
            count = struct.unpack_from(order + "H", data, offset)[0]
            first, entry_size, count_fmt, inline = offset + 2, 12, "I", 4
        out: dict[int, tuple] = {}
        for i in range(min(count, _MAX_ENTRIES)):
            at = first + i * entry_size
            tag, kind = struct.unpack_from(order + "HH", data, at)
            if tag not in wanted or kind not in _TYPES:
                continue
            n = struct.unpack_from(order + count_fmt, data, at + 4)[0]
            fmt, size = _TYPES[kind]
            where = at + 4 + struct.calcsize(count_fmt)
            if n * size > inline:
                where = struct.unpack_from(order + ("Q" if big else "I"), data, where)[0]
            if where + n * size > len(data):
                continue
            if kind == 2:
                out[tag] = (data[where:where + n].split(b"\x00", 1)[0].decode("latin-1"),)
            else:
                out[tag] = struct.unpack_from(order + fmt * n, data, where)
        return out
    except struct.error:
        return {}


def _geo_keys(directory: tuple) -> dict[int, int]:
    """Short-valued GeoKeys (the ones stored in the directory itself).

    The header's key count is not trusted: only the entries the directory holds are read (a crafted
    count of 4 000 000 000 would otherwise keep a worker busy for hours).
    """
    keys: dict[int, int] = {}
    if len(directory) < 4 or not all(isinstance(v, int) for v in directory):
        return keys
    for i in range(min(directory[3], (len(directory) - 4) // 4)):
        entry = directory[4 + 4 * i: 8 + 4 * i]
        if entry[1] == 0:
            keys[entry[0]] = entry[3]
    return keys


def _numbers(tags: dict[int, tuple], tag: int, count: int) -> tuple[float, ...] | None:
    """The first ``count`` values of ``tag`` when it has that many finite numbers, else None."""
    values = tags.get(tag, ())
    if len(values) < count or not all(isinstance(v, int | float) and math.isfinite(v) for v in values[:count]):
        return None
    return values[:count]


def georeference(data: bytes) -> Embedded:
    """The footprint of a GeoTIFF in EPSG:4326 (and its middle as the centre), or a note why not."""
    tags = tiff_tags(data, frozenset({IMAGE_WIDTH, IMAGE_LENGTH, MODEL_PIXEL_SCALE, MODEL_TIEPOINT,
                                      MODEL_TRANSFORMATION, GEO_KEY_DIRECTORY}))
    has_tiepoint = MODEL_TIEPOINT in tags and MODEL_PIXEL_SCALE in tags
    if not has_tiepoint and MODEL_TRANSFORMATION not in tags:
        return Embedded()
    keys = _geo_keys(tags.get(GEO_KEY_DIRECTORY, ()))
    crs = _crs(keys)
    if crs != f"EPSG:{WGS84}":
        return Embedded(note=f"georeferenced in {crs}: footprint not set (only EPSG:4326 is read)")
    size = (_numbers(tags, IMAGE_WIDTH, 1) or ()) + (_numbers(tags, IMAGE_LENGTH, 1) or ())
    if len(size) != 2:
        return Embedded(note="georeferenced, but the image size is missing: footprint not set")
    width, height = size
    if has_tiepoint:
        tiepoint, scale = _numbers(tags, MODEL_TIEPOINT, 6), _numbers(tags, MODEL_PIXEL_SCALE, 2)
        if tiepoint is None or scale is None:
            return Embedded(note="malformed georeferencing (a tiepoint needs 6 numbers, a pixel scale 2): "
                                 "footprint not set")
        i, j, _, x, y, _ = tiepoint
        scale_x, scale_y = scale
        west, north = x - i * scale_x, y + j * scale_y
    else:
        matrix = _numbers(tags, MODEL_TRANSFORMATION, 16)
        if matrix is None:
            return Embedded(note="malformed georeferencing (a transformation needs 16 numbers): footprint not set")
        if matrix[1] != 0 or matrix[4] != 0:
            return Embedded(note="georeferenced by a rotated transformation: footprint not set")
        scale_x, scale_y, west, north = matrix[0], -matrix[5], matrix[3], matrix[7]
    if keys.get(GT_RASTER_TYPE) == RASTER_PIXEL_IS_POINT:
        west, north = west - scale_x / 2, north + scale_y / 2
    try:
        footprint: Box = check_box(west, north - height * scale_y, west + width * scale_x, north)
    except ValueProblem as exc:
        return Embedded(note=f"EPSG:4326 georeferencing out of range ({exc}): footprint not set")
    return Embedded(with_center(Metadata(footprint=footprint)))


def _crs(keys: dict[int, int]) -> str:
    """The CRS the GeoKeys name: ``"EPSG:4326"`` for WGS84 longitude/latitude, else a description."""
    projected = keys.get(PROJECTED_CS_TYPE)
    if keys.get(GT_MODEL_TYPE) == MODEL_TYPE_PROJECTED or projected:
        return f"projected EPSG:{projected}" if projected and projected != USER_DEFINED else "a projected CRS"
    geographic = keys.get(GEOGRAPHIC_TYPE)
    if geographic == WGS84 and keys.get(GT_MODEL_TYPE, MODEL_TYPE_GEOGRAPHIC) == MODEL_TYPE_GEOGRAPHIC:
        return f"EPSG:{WGS84}"
    if geographic and geographic != USER_DEFINED:
        return f"geographic EPSG:{geographic}"
    return "an unknown CRS"


def exif_time(data: bytes) -> datetime | None:
    """EXIF DateTimeOriginal as UTC (its OffsetTimeOriginal applied when given), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif().get_ifd(EXIF_IFD)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return None
    raw = exif.get(DATE_TIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        value = datetime.strptime(raw.strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # "0000:00:00 00:00:00" and other placeholders
    offset = exif.get(OFFSET_TIME_ORIGINAL)
    zone = UTC
    if isinstance(offset, str) and len(offset.strip()) == 6 and offset.strip()[0] in "+-":
        sign = -1 if offset.strip()[0] == "-" else 1
        try:
            hours, minutes = int(offset.strip()[1:3]), int(offset.strip()[4:6])
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        except ValueError:
            zone = UTC
    try:
        return value.replace(tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return None  # "0001:01:01 00:00:00" at +01:00 falls before the year 1


def embedded(data: bytes) -> Embedded:
    """GeoTIFF footprint and EXIF acquisition time of one image, merged."""
    geo = georeference(data)
    acquired = exif_time(data)
    metadata = merge(Metadata(acquired=acquired), geo.metadata) if acquired is not None else geo.metadata
    return Embedded(metadata, geo.note)
