"""Conversions between library types and proto messages, shared by the services."""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp

from orbithash.metadata import Box, LonLat, SceneFilter, SceneMeta
from orbithash.model_facts import ModelFacts
from orbithash_api.v1 import orbithash_pb2 as pb


def model_info(facts: ModelFacts) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=facts.name, version=facts.version, bits=facts.bits, class_names=list(facts.class_names),
        input_size=facts.input_size, mean=list(facts.mean), std=list(facts.std), method=facts.method,
        backbone=facts.backbone,
    )


def facts_from_info(info: pb.ModelInfo) -> ModelFacts:
    return ModelFacts(
        name=info.name, version=info.version, bits=info.bits, class_names=tuple(info.class_names),
        input_size=info.input_size, mean=tuple(info.mean), std=tuple(info.std),  # type: ignore[arg-type]
        method=info.method, backbone=info.backbone,
    )


# -- scene metadata and search filters (orbithash.metadata) ----------------------------------------
# Times travel as google.protobuf.Timestamp and are kept as float UTC seconds, to the microsecond.


def seconds_from_timestamp(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def set_timestamp(ts: Timestamp, seconds: float) -> None:
    """Fill ``ts`` with ``seconds``, rounded to the microsecond (what a float of them holds)."""
    whole = math.floor(seconds)
    micros = round((seconds - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    ts.seconds, ts.nanos = int(whole), micros * 1000


def _box_from_pb(box: pb.BoundingBox) -> Box:
    return Box(box.west, box.south, box.east, box.north)


def _box_to_pb(box: Box) -> pb.BoundingBox:
    return pb.BoundingBox(west=box[0], south=box[1], east=box[2], north=box[3])


def scene_from_pb(meta: pb.SceneMetadata) -> SceneMeta:
    """Unchecked: the receiver checks it (``orbithash.metadata.check_scene``) naming the item."""
    return SceneMeta(
        acquired=seconds_from_timestamp(meta.acquired) if meta.HasField("acquired") else None,
        center=LonLat(meta.center.lon, meta.center.lat) if meta.HasField("center") else None,
        footprint=_box_from_pb(meta.footprint) if meta.HasField("footprint") else None,
        sensor=meta.sensor, platform=meta.platform, source_uri=meta.source_uri, attributes=dict(meta.attributes),
    )


def scene_to_pb(meta: SceneMeta) -> pb.SceneMetadata:
    out = pb.SceneMetadata(sensor=meta.sensor, platform=meta.platform, source_uri=meta.source_uri,
                           attributes=dict(meta.attributes))
    if meta.acquired is not None:
        set_timestamp(out.acquired, meta.acquired)
    if meta.center is not None:
        out.center.lon, out.center.lat = meta.center
    if meta.footprint is not None:
        out.footprint.CopyFrom(_box_to_pb(meta.footprint))
    return out


def filter_from_pb(f: pb.SearchFilter) -> SceneFilter:
    """Unchecked: the receiver checks it (``orbithash.metadata.check_filter``)."""
    return SceneFilter(
        acquired_from=seconds_from_timestamp(f.acquired_from) if f.HasField("acquired_from") else None,
        acquired_until=seconds_from_timestamp(f.acquired_until) if f.HasField("acquired_until") else None,
        intersects=_box_from_pb(f.intersects) if f.HasField("intersects") else None,
        center_within=_box_from_pb(f.center_within) if f.HasField("center_within") else None,
        sensors=frozenset(f.sensors), attributes=dict(f.attributes),
    )


def filter_to_pb(f: SceneFilter) -> pb.SearchFilter:
    out = pb.SearchFilter(sensors=sorted(f.sensors), attributes=dict(f.attributes))
    if f.acquired_from is not None:
        set_timestamp(out.acquired_from, f.acquired_from)
    if f.acquired_until is not None:
        set_timestamp(out.acquired_until, f.acquired_until)
    if f.intersects is not None:
        out.intersects.CopyFrom(_box_to_pb(f.intersects))
    if f.center_within is not None:
        out.center_within.CopyFrom(_box_to_pb(f.center_within))
    return out
