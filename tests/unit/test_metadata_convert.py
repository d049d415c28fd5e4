"""Proto ↔ library conversions of scene metadata and filters (orbithash_serving.convert): unset
fields stay unset, times survive to the microsecond, and a round trip changes nothing."""

from __future__ import annotations

import pytest

from orbithash.metadata import Box, LonLat, SceneFilter, SceneMeta
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_serving.convert import (
    filter_from_pb,
    filter_to_pb,
    scene_from_pb,
    scene_to_pb,
    seconds_from_timestamp,
    set_timestamp,
)

FULL = SceneMeta(acquired=1_684_000_000.123456, center=LonLat(179.99, -12.5),
                 footprint=Box(179.5, -13.0, -179.5, -12.0), sensor="MSI", platform="Sentinel-2A",
                 source_uri="s3://x/y", attributes={"cloud_cover": "12.5", "tile": "01KAB"})


def test_scene_round_trips_and_unset_fields_stay_unset() -> None:
    for meta in (FULL, SceneMeta(), SceneMeta(center=LonLat(0.0, 0.0)), SceneMeta(acquired=0.0),
                 SceneMeta(acquired=-1.5), SceneMeta(footprint=Box(-180.0, -90.0, 180.0, 90.0))):
        message = scene_to_pb(meta)
        assert scene_from_pb(pb.SceneMetadata.FromString(message.SerializeToString())) == meta
    empty = scene_to_pb(SceneMeta(center=LonLat(0.0, 0.0)))
    assert empty.HasField("center") and not empty.HasField("acquired") and not empty.HasField("footprint")
    assert scene_from_pb(pb.SceneMetadata()) == SceneMeta()
    assert scene_from_pb(pb.Item().metadata).is_empty  # an item sent without metadata


def test_filter_round_trips() -> None:
    f = SceneFilter(acquired_from=1.5e9, acquired_until=1.6e9 + 0.25, intersects=Box(170.0, -1.0, -170.0, 1.0),
                    center_within=Box(0.0, 0.0, 1.0, 1.0), sensors=frozenset({"MSI", "OLI"}),
                    attributes={"tile": "01KAB"})
    for g in (f, SceneFilter(), SceneFilter(sensors=frozenset({""}))):
        assert filter_from_pb(pb.SearchFilter.FromString(filter_to_pb(g).SerializeToString())) == g
    assert filter_from_pb(pb.ShardSearchRequest().filter).is_empty


@pytest.mark.parametrize(("seconds", "nanos"), [(1_684_000_000, 123_456_000), (0, 0), (-1, 999_999_000),
                                                (253_402_300_799, 999_999_000), (-62_135_596_800, 0)])
def test_timestamps_survive_to_the_microsecond(seconds: int, nanos: int) -> None:
    ts = pb.SceneMetadata().acquired
    ts.seconds, ts.nanos = seconds, nanos
    out = pb.SceneMetadata().acquired
    set_timestamp(out, seconds_from_timestamp(ts))
    if abs(seconds) < 2**33:  # beyond, a float's resolution is coarser than a microsecond
        assert (out.seconds, out.nanos) == (seconds, nanos)
    else:
        assert abs((out.seconds - seconds) + (out.nanos - nanos) / 1e9) < 1e-4
    assert 0 <= out.nanos < 1_000_000_000
    nano = pb.SceneMetadata().acquired
    set_timestamp(nano, 1.9999999999)  # rounds up into the next second
    assert (nano.seconds, nano.nanos) == (2, 0)
