"""The client's dataclasses ↔ the gateway's proto messages (``orbithash_api.v1``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_client.types import (
    BoundingBox,
    DeleteResult,
    Encoding,
    Filter,
    GeoPoint,
    GetResult,
    Hit,
    ImageSource,
    Info,
    IngestSummary,
    Metadata,
    ModelInfo,
    Query,
    SearchResult,
    ShardInfo,
    StoredItem,
    UpdateResult,
)

NO_LABEL = -1  # the server's "stored without a label"


def read_image(image: ImageSource) -> bytes:
    """The bytes of an image given as bytes or as a path."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    raise TypeError(f"an image must be bytes or a path, got {type(image).__name__}")


# -- times, places ----------------------------------------------------------------------------------


def _set_time(target: Timestamp, value: datetime) -> None:
    target.FromDatetime(value)  # aware (checked by the dataclasses): converted to UTC


def _time(source: Timestamp) -> datetime:
    return source.ToDatetime(tzinfo=UTC)


def _box_pb(box: BoundingBox) -> pb.BoundingBox:
    return pb.BoundingBox(west=box.west, south=box.south, east=box.east, north=box.north)


def _box(box: pb.BoundingBox) -> BoundingBox:
    return BoundingBox(box.west, box.south, box.east, box.north)


# -- metadata and filters ---------------------------------------------------------------------------


def metadata_to_pb(meta: Metadata) -> pb.SceneMetadata:
    out = pb.SceneMetadata(sensor=meta.sensor or "", platform=meta.platform or "", source_uri=meta.source_uri or "",
                           attributes=dict(meta.attributes))
    if meta.acquired is not None:
        _set_time(out.acquired, meta.acquired)
    if meta.center is not None:
        out.center.CopyFrom(pb.GeoPoint(lon=meta.center.lon, lat=meta.center.lat))
    if meta.footprint is not None:
        out.footprint.CopyFrom(_box_pb(meta.footprint))
    return out


def metadata_from_pb(meta: pb.SceneMetadata) -> Metadata:
    return Metadata(
        acquired=_time(meta.acquired) if meta.HasField("acquired") else None,
        center=GeoPoint(meta.center.lon, meta.center.lat) if meta.HasField("center") else None,
        footprint=_box(meta.footprint) if meta.HasField("footprint") else None,
        sensor=meta.sensor or None, platform=meta.platform or None, source_uri=meta.source_uri or None,
        attributes=dict(meta.attributes),
    )


def _metadata_of(message: pb.Hit | pb.StoredItem) -> Metadata | None:
    return metadata_from_pb(message.metadata) if message.HasField("metadata") else None


def filter_to_pb(wanted: Filter) -> pb.SearchFilter:
    out = pb.SearchFilter(sensors=list(wanted.sensors), attributes=dict(wanted.attributes))
    if wanted.acquired_from is not None:
        _set_time(out.acquired_from, wanted.acquired_from)
    if wanted.acquired_until is not None:
        _set_time(out.acquired_until, wanted.acquired_until)
    if wanted.intersects is not None:
        out.intersects.CopyFrom(_box_pb(wanted.intersects))
    if wanted.center_within is not None:
        out.center_within.CopyFrom(_box_pb(wanted.center_within))
    return out


# -- requests ---------------------------------------------------------------------------------------


def ingest_item_to_pb(item_id: str, image: bytes, label: int | None, metadata: Metadata | None) -> pb.IngestItem:
    out = pb.IngestItem(id=item_id, image=image)
    if label is not None:
        out.label = label
    if metadata is not None:
        out.metadata.CopyFrom(metadata_to_pb(metadata))
    return out


def query_to_pb(query: Query) -> pb.Query:
    if query.image is not None:
        return pb.Query(image=read_image(query.image))
    if query.code is not None:
        return pb.Query(code=bytes(query.code))
    return pb.Query(id=query.id)


def search_options(k: int, max_distance: int | None, label: int | None, filter: Filter | None, rerank: bool,
                   rerank_candidates: int, with_metadata: bool, with_thumbnails: bool) -> dict[str, object]:
    """The fields SearchRequest and SearchManyRequest share, as keyword arguments (unset ones left out)."""
    options: dict[str, object] = {"k": k, "rerank": rerank, "rerank_candidates": rerank_candidates,
                                  "with_metadata": with_metadata, "with_thumbnails": with_thumbnails}
    if max_distance is not None:
        options["max_distance"] = max_distance
    if label is not None:
        options["label"] = label
    if filter is not None:
        options["filter"] = filter_to_pb(filter)
    return options


def search_request(query: Query, options: dict[str, object]) -> pb.SearchRequest:
    request = pb.SearchRequest(**options)  # type: ignore[arg-type]
    one = query_to_pb(query)
    kind = one.WhichOneof("query")
    setattr(request, kind, getattr(one, kind))  # type: ignore[arg-type]
    return request


def metadata_updates_to_pb(updates: Iterable[tuple[str, Metadata | None]]) -> pb.UpdateMetadataRequest:
    return pb.UpdateMetadataRequest(updates=[
        pb.MetadataUpdate(id=item_id, metadata=None if meta is None else metadata_to_pb(meta))
        for item_id, meta in updates])


# -- answers ----------------------------------------------------------------------------------------


def _label(label: int) -> int | None:
    return None if label == NO_LABEL else label


def hit_from_pb(hit: pb.Hit, reranked: bool) -> Hit:
    return Hit(hit.id, hit.distance, _label(hit.label), hit.shard, hit.score if reranked else None,
               _metadata_of(hit), hit.thumbnail or None)


def search_result_from_pb(reply: pb.SearchResponse, reranked: bool) -> SearchResult:
    query = None
    if reply.HasField("query"):
        q = reply.query
        query = Encoding(q.code, tuple(q.u), tuple(q.probabilities), q.label, q.class_name)
    return SearchResult(tuple(hit_from_pb(h, reranked) for h in reply.hits), query, reply.model_version,
                        reply.partial, tuple(reply.failed_shards))


def get_result_from_pb(reply: pb.GetItemsResponse) -> GetResult:
    items = tuple(StoredItem(i.id, i.code, _label(i.label), i.shard, _metadata_of(i), i.thumbnail or None)
                  for i in reply.items)
    return GetResult(items, tuple(reply.missing))


def update_result_from_pb(reply: pb.UpdateMetadataResponse) -> UpdateResult:
    return UpdateResult(reply.updated, tuple(reply.missing))


def delete_result_from_pb(reply: pb.DeleteResponse) -> DeleteResult:
    return DeleteResult(reply.deleted, tuple(reply.missing))


def ingest_summary_from_pb(reply: pb.IngestSummary) -> IngestSummary:
    return IngestSummary(received=reply.received, ingested=reply.ingested, replaced=reply.replaced,
                         per_shard=tuple(reply.per_shard), failed_shards=tuple(reply.failed_shards))


def info_from_pb(reply: pb.InfoResponse) -> Info:
    m = reply.model
    model = ModelInfo(m.name, m.version, m.bits, tuple(m.class_names), m.input_size, tuple(m.mean), tuple(m.std),
                      m.method, m.backbone)
    shards = tuple(ShardInfo(s.shard, s.address, s.count, s.healthy) for s in reply.shards)
    return Info(model, shards, reply.total)
