"""What an image says about itself: a GeoTIFF's footprint (EPSG:4326 only) and EXIF DateTimeOriginal."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
import tifffile
from unit.cli.cli_support import image_bytes

from orbithash_cli.geotags import _geo_keys, embedded, exif_time, georeference, tiff_tags


def geotiff(keys: list[int] | None, tiepoint: tuple | None = (0, 0, 0, 10.0, 46.0, 0), scale=(0.01, 0.02, 0),
            transformation: tuple | None = None, shape=(50, 100), bigtiff: bool = False,
            dtype=np.uint16, bands: int = 4) -> bytes:
    """A ``shape`` (rows, columns) TIFF of ``bands`` bands with GeoTIFF tags."""
    tags = []
    if tiepoint is not None:
        tags += [(33922, "d", 6, tiepoint, True), (33550, "d", 3, scale, True)]
    if transformation is not None:
        tags.append((34264, "d", 16, transformation, True))
    if keys is not None:
        tags.append((34735, "H", len(keys), keys, True))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((*shape, bands), dtype), photometric="minisblack", planarconfig="contig",
                     extratags=tags, bigtiff=bigtiff)
    return buffer.getvalue()


def geo_keys(model_type: int, epsg_key: int, epsg: int, raster_type: int = 1) -> list[int]:
    """A GeoKeyDirectory: version 1.1.0, three keys, all short values stored in the directory."""
    return [1, 1, 0, 3, 1024, 0, 1, model_type, 1025, 0, 1, raster_type, epsg_key, 0, 1, epsg]


WGS84 = geo_keys(2, 2048, 4326)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_an_epsg_4326_geotiff_gives_its_footprint_and_centre(bigtiff: bool) -> None:
    data = geotiff(WGS84, bigtiff=bigtiff)  # 100 columns × 0.01° from 10°E, 50 rows × 0.02° down from 46°N
    found = georeference(data)
    assert found.note == ""
    west, south, east, north = found.metadata.footprint
    assert (west, east) == pytest.approx((10.0, 11.0)) and (south, north) == pytest.approx((45.0, 46.0))
    assert tuple(found.metadata.center) == pytest.approx((10.5, 45.5))


def test_a_tiepoint_inside_the_raster_and_pixel_is_point() -> None:
    keys = geo_keys(2, 2048, 4326, raster_type=2)  # PixelIsPoint: the tiepoint is a pixel's centre
    found = georeference(geotiff(keys, tiepoint=(10, 5, 0, 10.1, 45.9, 0)))
    assert tuple(found.metadata.footprint) == pytest.approx((9.995, 45.01, 10.995, 46.01))


def test_a_transformation_without_rotation_works_too() -> None:
    matrix = (0.01, 0, 0, 10.0, 0, -0.02, 0, 46.0, 0, 0, 0, 0, 0, 0, 0, 1)
    found = georeference(geotiff(WGS84, tiepoint=None, transformation=matrix))
    assert tuple(found.metadata.footprint) == pytest.approx((10.0, 45.0, 11.0, 46.0))
    rotated = (0.01, 0.001, 0, 10.0, 0.001, -0.02, 0, 46.0, 0, 0, 0, 0, 0, 0, 0, 1)
    assert "rotated" in georeference(geotiff(WGS84, tiepoint=None, transformation=rotated)).note


@pytest.mark.parametrize(("keys", "said"), [
    (geo_keys(1, 3072, 32633), "projected EPSG:32633"),
    (geo_keys(2, 2048, 4269), "geographic EPSG:4269"),
    (None, "an unknown CRS"),
])
def test_any_other_crs_is_left_alone_and_said_so(keys, said: str) -> None:
    found = georeference(geotiff(keys, tiepoint=(0, 0, 0, 500000.0, 5100000.0, 0), scale=(10, 10, 0)))
    assert found.metadata is None
    assert said in found.note and "only EPSG:4326" in found.note


def test_images_without_georeferencing_say_nothing() -> None:
    assert georeference(geotiff(None, tiepoint=None)).note == ""
    assert georeference(image_bytes(kind="TIFF")).metadata is None
    assert georeference(image_bytes(kind="PNG")).metadata is None
    assert tiff_tags(b"II*\x00\xff\xff\xff\xff", frozenset({256})) == {}  # a broken directory offset


def test_exif_date_time_original() -> None:
    jpeg = image_bytes(kind="JPEG", exif_time="2021:06:30 12:34:56")
    assert exif_time(jpeg) == datetime(2021, 6, 30, 12, 34, 56, tzinfo=UTC)  # no offset: taken as UTC
    assert exif_time(image_bytes(kind="JPEG")) is None
    assert exif_time(image_bytes(kind="JPEG", exif_time="0000:00:00 00:00:00")) is None
    assert exif_time(b"not an image") is None


def test_exif_offset_time_original_is_applied() -> None:
    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769).update({36867: "2021:06:30 12:34:56", 36881: "+02:00"})
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif)
    assert exif_time(buffer.getvalue()) == datetime(2021, 6, 30, 10, 34, 56, tzinfo=UTC)


def test_embedded_gives_place_and_time() -> None:
    plain = embedded(image_bytes(kind="JPEG", exif_time="2020:01:02 03:04:05"))
    assert plain.metadata.acquired == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert plain.metadata.footprint is None
    geo = embedded(geotiff(WGS84))
    assert geo.metadata.acquired is None and geo.metadata.footprint is not None


def tiff_with(tags: list[tuple]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((4, 4), np.uint8), extratags=tags)
    return buffer.getvalue()


@pytest.mark.parametrize("tags", [
    [(33922, "d", 3, (0.0, 0.0, 0.0), True), (33550, "d", 3, (0.01, 0.01, 0), True)],  # tiepoint of 3 values
    [(33922, "d", 6, (0, 0, 0, 10.0, 46.0, 0), True), (33550, "d", 1, (0.01,), True)],  # scale of 1 value
    [(33922, "s", 0, "0,0,0,10,46,0", True), (33550, "d", 3, (0.01, 0.01, 0), True)],   # tiepoint as text
    [(34264, "s", 0, "a matrix", True)],                                               # transformation as text
])
def test_malformed_georeferencing_is_a_note_not_an_exception(tags: list[tuple]) -> None:
    keys = [(34735, "H", len(WGS84), WGS84, True)]
    found = georeference(tiff_with(tags + keys))
    assert found.metadata is None and "malformed" in found.note


def test_a_geokey_directory_claiming_billions_of_keys_reads_only_what_it_holds() -> None:
    import threading

    directory = (*WGS84[:3], 4_000_000_000, *WGS84[4:])
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(keys=_geo_keys(directory)), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "the key count was trusted"
    assert done["keys"] == {1024: 2, 1025: 1, 2048: 4326}
    assert _geo_keys(("1", "1", "0", "3")) == {}  # a directory typed as text


def test_an_exif_time_whose_offset_leaves_the_calendar_is_no_time() -> None:
    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769).update({36867: "0001:01:01 00:00:00", 36881: "+01:00"})
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif)
    assert exif_time(buffer.getvalue()) is None
