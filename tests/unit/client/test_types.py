"""The client's dataclasses and their proto conversions (pure logic, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_client import BoundingBox, Filter, GeoPoint, Item, Metadata, Query
from orbithash_client import _convert as convert

CEST = timezone(timedelta(hours=2))


def test_metadata_times_are_aware_and_kept_in_utc() -> None:
    meta = Metadata(acquired=datetime(2024, 5, 1, 12, 30, tzinfo=CEST))
    assert meta.acquired == datetime(2024, 5, 1, 10, 30, tzinfo=UTC) and meta.acquired.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        Metadata(acquired=datetime(2024, 5, 1, 12, 30))
    with pytest.raises(ValueError, match="acquired_until must be timezone-aware"):
        Filter(acquired_until=datetime(2024, 5, 1))
    with pytest.raises(TypeError, match="acquired must be a datetime"):
        Metadata(acquired="2024-05-01")  # type: ignore[arg-type]


def test_places_take_plain_tuples_and_values_are_copied() -> None:
    attributes = {"tile": "T32"}
    meta = Metadata(center=(10.5, -3.25), footprint=(10, -4, 11, -3), attributes=attributes)  # type: ignore[arg-type]
    attributes["tile"] = "changed"
    assert meta.center == GeoPoint(10.5, -3.25) and isinstance(meta.center, GeoPoint)
    assert meta.footprint == BoundingBox(10, -4, 11, -3) and meta.footprint.north == -3
    assert meta.attributes == {"tile": "T32"}
    with pytest.raises(TypeError, match="attributes must map strings to strings"):
        Metadata(attributes={"n": 3})  # type: ignore[dict-item]
    assert Filter(sensors="MSI").sensors == ("MSI",)  # type: ignore[arg-type]  # one sensor, not its letters
    assert Filter(sensors=["MSI", "SAR"]).sensors == ("MSI", "SAR")  # type: ignore[arg-type]


def test_metadata_round_trips_through_the_proto() -> None:
    full = Metadata(acquired=datetime(2023, 7, 14, 9, 5, 3, 250_000, tzinfo=UTC), center=(7.1, 46.2),
                    footprint=(7.0, 46.0, 7.2, 46.4), sensor="MSI", platform="Sentinel-2A",
                    source_uri="s3://bucket/scene.tif", attributes={"tile": "T32TLS", "cloud": "3"})
    message = convert.metadata_to_pb(full)
    assert message.acquired.seconds == 1_689_325_503 and message.acquired.nanos == 250_000_000
    assert (message.center.lon, message.footprint.north, message.attributes["tile"]) == (7.1, 46.4, "T32TLS")
    assert convert.metadata_from_pb(message) == full
    empty = convert.metadata_to_pb(Metadata())
    assert empty == pb.SceneMetadata() and convert.metadata_from_pb(empty) == Metadata()
    assert Metadata().sensor is None  # unset text is None, not ""


def test_filter_to_proto_sets_only_what_is_given() -> None:
    wanted = Filter(acquired_from=datetime(2020, 1, 1, tzinfo=UTC), intersects=(170, -10, -170, 10),
                    sensors=("MSI",), attributes={"tile": "T01"})
    message = convert.filter_to_pb(wanted)
    assert message.HasField("acquired_from") and not message.HasField("acquired_until")
    assert message.HasField("intersects") and not message.HasField("center_within")
    assert (message.intersects.west, message.intersects.east) == (170, -170)
    assert list(message.sensors) == ["MSI"] and dict(message.attributes) == {"tile": "T01"}
    assert convert.filter_to_pb(Filter()) == pb.SearchFilter()


def test_a_query_is_exactly_one_of_image_code_or_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of image, code or id; got none"):
        Query()
    with pytest.raises(ValueError, match=r"got \['image', 'id'\]"):
        Query(image=b"x", id="a")
    path = tmp_path / "q.jpg"
    path.write_bytes(b"\xff\xd8jpeg")
    assert convert.query_to_pb(Query(image=path)) == pb.Query(image=b"\xff\xd8jpeg")
    assert convert.query_to_pb(Query(image=str(path))) == pb.Query(image=b"\xff\xd8jpeg")
    assert convert.query_to_pb(Query(code=b"\x00\x01")) == pb.Query(code=b"\x00\x01")
    assert convert.query_to_pb(Query(id="scene-1")) == pb.Query(id="scene-1")


def test_search_requests_leave_unset_options_unset() -> None:
    plain = convert.search_request(Query(id="a"), convert.search_options(5, None, None, None, False, 0, False, False))
    assert plain.id == "a" and plain.k == 5
    assert not plain.HasField("max_distance") and not plain.HasField("label") and not plain.HasField("filter")
    full = convert.search_request(Query(code=b"\x00"), convert.search_options(
        3, 0, 0, Filter(sensors=("SAR",)), True, 40, True, True))
    assert (full.code, full.max_distance, full.label, full.rerank, full.rerank_candidates) == (b"\x00", 0, 0, True, 40)
    assert list(full.filter.sensors) == ["SAR"] and full.with_metadata and full.with_thumbnails


def test_answers_become_plain_values() -> None:
    meta = convert.metadata_to_pb(Metadata(sensor="MSI"))
    reply = pb.SearchResponse(
        hits=[pb.Hit(id="a", distance=1, label=-1, shard=1, score=-2.5, metadata=meta, thumbnail=b"jpg"),
              pb.Hit(id="b", distance=2, label=4, shard=0)],
        query=pb.Encoding(code=b"\x80", u=[0.5], probabilities=[0.25, 0.75], label=1, class_name="forest"),
        partial=True, failed_shards=[2], model_version="v1")
    result = convert.search_result_from_pb(reply, reranked=False)
    a, b = result.hits
    assert (a.id, a.distance, a.label, a.shard, a.score) == ("a", 1, None, 1, None)  # no label; score: not re-ranked
    assert a.metadata == Metadata(sensor="MSI") and a.thumbnail == b"jpg"
    assert (b.label, b.metadata, b.thumbnail) == (4, None, None)
    assert result.partial and result.failed_shards == (2,) and result.model_version == "v1"
    assert result.query is not None and result.query.class_name == "forest" and result.query.u == (0.5,)
    assert list(result) == [a, b] and len(result) == 2 and result.ids == ["a", "b"]
    assert convert.search_result_from_pb(reply, reranked=True).hits[0].score == -2.5
    got = convert.get_result_from_pb(pb.GetItemsResponse(
        items=[pb.StoredItem(id="a", code=b"\x01", label=-1, shard=1, metadata=meta)], missing=["z"]))
    assert got.by_id()["a"].metadata == Metadata(sensor="MSI") and got.items[0].label is None
    assert got.items[0].thumbnail is None and got.missing == ("z",)


def test_items_hold_what_the_caller_gave() -> None:
    item = Item("scene-1", b"img", 3, Metadata(sensor="MSI"))
    message = convert.ingest_item_to_pb(item.id, b"img", item.label, item.metadata)
    assert message.label == 3 and message.metadata.sensor == "MSI"
    bare = convert.ingest_item_to_pb("x", b"img", None, None)
    assert not bare.HasField("label") and not bare.HasField("metadata")
