"""Metadata sidecars: CSV and GeoJSON, matched by id, by path, or by a file beside the sidecar."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orbithash_cli import UsageError
from orbithash_cli.sidecar import load_sidecars
from orbithash_client import BoundingBox, GeoPoint, Metadata


def _csv(tmp_path: Path, text: str, name: str = "meta.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_rows_by_id_and_by_path_with_every_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "id,path,acquired,lon,lat,west,south,east,north,sensor,platform,source_uri,attr:orbit,color\n"
                          "station/a.png,,2024-05-01T10:20:00Z,10.5,45.25,,,,,MSI,Sentinel-2A,s3://b/a,1234,red\n"
                          ",forest/b.tif,2024-05-02 08:00:00+02:00,,,10,40,12,42,,,,,\n"
                          "\n")
    sidecar = load_sidecars([path])
    a = sidecar.lookup("station/a.png", "a.png", None)
    assert a == Metadata(acquired=datetime(2024, 5, 1, 10, 20, tzinfo=UTC), center=GeoPoint(10.5, 45.25),
                         sensor="MSI", platform="Sentinel-2A", source_uri="s3://b/a", attributes={"orbit": "1234"})
    b = sidecar.lookup("x/forest/b.tif", "forest/b.tif", None)  # by path relative to the root, without the prefix
    assert b.acquired == datetime(2024, 5, 2, 6, 0, tzinfo=UTC)  # +02:00 → UTC
    assert b.footprint == BoundingBox(10, 40, 12, 42) and b.center == GeoPoint(11, 41)  # centre: the box's middle
    assert b.sensor is None
    assert sidecar.ignored == {"color"}
    assert sidecar.lookup("other", "other", None) is None
    assert sidecar.unused() == []


def test_a_time_without_offset_is_utc_and_unused_rows_are_reported(tmp_path: Path) -> None:
    path = _csv(tmp_path, "path,acquired\na.png,2024-01-02\nnot-there.png,2024-01-03T04:05:06\n")
    sidecar = load_sidecars([path])
    assert sidecar.lookup("a.png", "a.png", None).acquired == datetime(2024, 1, 2, tzinfo=UTC)
    assert sidecar.unused() == ["meta.csv line 3"]


def test_a_path_relative_to_the_sidecar_matches_the_file(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    image = tmp_path / "imgs" / "s.png"
    image.write_bytes(b"x")
    sidecar = load_sidecars([_csv(tmp_path, "path,sensor\nimgs/s.png,OLI\n")])
    assert sidecar.lookup("s.png", "s.png", image).sensor == "OLI"  # root was imgs/: found through the file


@pytest.mark.parametrize(("row", "message"), [
    ("a.png,yesterday,,", "line 2: 'yesterday' is not an ISO-8601 time"),
    ("a.png,,200,10", "line 2: longitude 200.0 is outside -180..180"),
    ("a.png,,10,", "line 2: lon and lat go together"),
    (",2024-01-01,,", "line 2: neither id nor path is given"),
])
def test_bad_csv_values_refuse_the_file_naming_the_line(tmp_path: Path, row: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_sidecars([_csv(tmp_path, f"path,acquired,lon,lat\n{row}\n")])


def test_csv_boxes_are_checked_and_ids_must_not_repeat(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="west, south, east and north go together"):
        load_sidecars([_csv(tmp_path, "id,west,south,east,north\na,1,2,3,\n")])
    with pytest.raises(UsageError, match=r"south 5\.0 is north of north 2\.0"):
        load_sidecars([_csv(tmp_path, "id,west,south,east,north\na,1,5,3,2\n")])
    with pytest.raises(UsageError, match=r"line 3: id 'a' is already described at meta\.csv line 2"):
        load_sidecars([_csv(tmp_path, "id\na\na\n")])
    with pytest.raises(UsageError, match="needs an 'id' or a 'path' column"):
        load_sidecars([_csv(tmp_path, "name,sensor\na,MSI\n")])


def _geojson(tmp_path: Path, features: list) -> Path:
    path = tmp_path / "meta.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_geojson_points_and_polygons(tmp_path: Path) -> None:
    path = _geojson(tmp_path, [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-118.25, 34.05]},
         "properties": {"id": "la.png", "acquired": "2023-07-04T18:00:00Z", "sensor": "PAN", "cloud": 3,
                        "attr:tile": "T11SLT"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[10, 40], [12, 40], [12, 42], [10, 42],
                                                                             [10, 40]]]},
         "properties": {"path": "poly.png", "attributes": {"orbit": 7}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[179, -1], [-179, -1], [-179, 1],
                                                                             [179, 1], [179, -1]]]},
         "properties": {"path": "dateline.png"}},
        {"type": "Feature", "geometry": None, "properties": {"path": "nowhere.png", "platform": "L9"}},
    ])
    sidecar = load_sidecars([path])
    la = sidecar.lookup("la.png", "la.png", None)
    assert la.center == GeoPoint(-118.25, 34.05) and la.footprint is None and la.sensor == "PAN"
    assert la.attributes == {"tile": "T11SLT"}
    poly = sidecar.lookup("p", "poly.png", None)
    assert poly.footprint == BoundingBox(10, 40, 12, 42) and poly.center == GeoPoint(11, 41)
    assert poly.attributes == {"orbit": "7"}
    dateline = sidecar.lookup("d", "dateline.png", None)
    assert dateline.footprint == BoundingBox(179, -1, -179, 1)  # crosses the antimeridian: west > east
    assert dateline.center == GeoPoint(180, 0)
    assert sidecar.lookup("n", "nowhere.png", None) == Metadata(platform="L9")
    assert sidecar.ignored == {"cloud"}


def test_bad_geojson_names_the_feature(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="feature 1: geometry type 'LineString'"):
        load_sidecars([_geojson(tmp_path, [{"type": "Feature", "properties": {"id": "a"},
                                            "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}])])
    with pytest.raises(UsageError, match="feature 1: position"):
        load_sidecars([_geojson(tmp_path, [{"type": "Feature", "properties": {"id": "a"},
                                            "geometry": {"type": "Point", "coordinates": [1]}}])])
    path = tmp_path / "x.geojson"
    path.write_text('{"type": "Point"}')
    with pytest.raises(UsageError, match="FeatureCollection"):
        load_sidecars([path])
    with pytest.raises(UsageError, match=r"a \.csv or a \.geojson"):
        load_sidecars([_csv(tmp_path, "", name="meta.txt")])


def _feature(geometry: object, **properties: object) -> dict:
    return {"type": "Feature", "properties": {"id": "a", **properties}, "geometry": geometry}


@pytest.mark.parametrize(("geometry", "said"), [
    ({"type": "Polygon", "coordinates": [5]}, "Polygon"),
    ({"type": "Polygon", "coordinates": [[5]]}, "position"),
    ({"type": "Polygon", "coordinates": ["ring"]}, "Polygon"),
    ({"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]], 7]}, "MultiPolygon"),
    ({"type": "MultiPolygon", "coordinates": [[7]]}, "MultiPolygon"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 1]], {"x": 1}]}, "Polygon"),
])
def test_a_malformed_geometry_names_the_feature(tmp_path: Path, geometry: object, said: str) -> None:
    with pytest.raises(UsageError, match=f"feature 1: .*{said}"):
        load_sidecars([_geojson(tmp_path, [_feature(geometry)])])


def test_geojson_nested_too_deep_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.geojson"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UsageError, match=r"deep\.geojson.*nested too deeply"):
        load_sidecars([path])


def test_a_csv_cell_over_the_field_limit_names_the_file_and_line(tmp_path: Path) -> None:
    path = _csv(tmp_path, "id,sensor\na,MSI\nb," + "x" * 200_000 + "\n")
    with pytest.raises(UsageError, match=r"meta\.csv.*line 3"):
        load_sidecars([path])


def test_a_time_the_offset_moves_out_of_the_calendar_is_a_value_problem(tmp_path: Path) -> None:
    path = _csv(tmp_path, "id,acquired\na,0001-01-01T00:30:00+01:00\n")
    with pytest.raises(UsageError, match=r"line 2: .*0001-01-01T00:30:00"):
        load_sidecars([path])
    with pytest.raises(UsageError, match=r"feature 1: .*0001-01-01T00:30:00"):
        load_sidecars([_geojson(tmp_path, [_feature(None, acquired="0001-01-01T00:30:00+01:00")])])


def test_duplicated_csv_columns_are_refused_by_name(tmp_path: Path) -> None:
    path = _csv(tmp_path, "id,sensor,lat,sensor,lon,lat\na,MSI,10,PAN,20,11\n")
    with pytest.raises(UsageError, match="repeated in the header: lat, sensor "):
        load_sidecars([path])
    spaced = _csv(tmp_path, "id, sensor,sensor \na,MSI,PAN\n", name="spaced.csv")
    with pytest.raises(UsageError, match=r"repeated.*: sensor "):
        load_sidecars([spaced])
