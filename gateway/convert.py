"""Proto messages ↔ the gateway's plain types, both for its public API and for the calls it makes.

Scene metadata and filters become ``orbithash.metadata`` values through the shared conversions of
``orbithash_serving.convert``; an unset message is None (nothing given), never an empty value.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gateway.core import (
    ByCode,
    ById,
    ByImage,
    DeleteResult,
    Encoding,
    GetResult,
    Hit,
    HitColumns,
    Info,
    IngestItem,
    IngestSummary,
    MetadataUpdate,
    Query,
    SearchManyRequest,
    SearchRequest,
    SearchResult,
    ShardQuery,
    StoredItem,
    UpdateResult,
)
from orbithash.metadata import SceneFilter, SceneMeta
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_serving.convert import filter_from_pb, filter_to_pb, model_info, scene_from_pb, scene_to_pb

# -- the public API (gateway.servicer) -------------------------------------------------------------


def _query_from_pb(request: pb.SearchRequest | pb.Query) -> Query | None:
    kind = request.WhichOneof("query")
    if kind == "image":
        return ByImage(request.image)
    if kind == "code":
        return ByCode(request.code)
    if kind == "id":
        return ById(request.id)
    return None  # the core says what is missing


def _filter_from_pb(request: pb.SearchRequest | pb.SearchManyRequest) -> SceneFilter | None:
    return filter_from_pb(request.filter) if request.HasField("filter") else None


def _scene_to_pb(meta: SceneMeta | None) -> pb.SceneMetadata | None:
    """None for an item without metadata (or with empty metadata): the field stays unset."""
    return None if meta is None or meta.is_empty else scene_to_pb(meta)


def _scene_from_pb(message: pb.IngestItem | pb.Hit | pb.Item) -> SceneMeta | None:
    return scene_from_pb(message.metadata) if message.HasField("metadata") else None


def search_request_from_pb(request: pb.SearchRequest) -> SearchRequest:
    return SearchRequest(
        query=_query_from_pb(request), k=request.k,
        max_distance=request.max_distance if request.HasField("max_distance") else None,
        label=request.label if request.HasField("label") else None,
        rerank=request.rerank, rerank_candidates=request.rerank_candidates,
        filter=_filter_from_pb(request), with_metadata=request.with_metadata,
        with_thumbnails=request.with_thumbnails,
    )


def search_many_request_from_pb(request: pb.SearchManyRequest) -> SearchManyRequest:
    return SearchManyRequest(
        queries=[_query_from_pb(q) for q in request.queries], k=request.k,
        max_distance=request.max_distance if request.HasField("max_distance") else None,
        label=request.label if request.HasField("label") else None,
        rerank=request.rerank, rerank_candidates=request.rerank_candidates,
        filter=_filter_from_pb(request), with_metadata=request.with_metadata,
        with_thumbnails=request.with_thumbnails,
    )


def _add_hits(hits: Iterable[Hit], response: pb.SearchResponse) -> None:
    add = response.hits.add  # in place: k may be in the thousands, and copying built messages costs more
    for h in hits:
        if h.metadata is None and not h.thumbnail:
            add(id=h.id, distance=h.distance, label=h.label, shard=h.shard, score=h.score)
        else:
            add(id=h.id, distance=h.distance, label=h.label, shard=h.shard, score=h.score,
                metadata=_scene_to_pb(h.metadata), thumbnail=h.thumbnail)


def _fill_search_response(result: SearchResult, response: pb.SearchResponse) -> None:
    if result.query is not None:
        response.query.CopyFrom(encoding_to_pb(result.query))
    response.partial = result.partial
    response.failed_shards.extend(result.failed_shards)
    response.model_version = result.model_version
    _add_hits(result.hits, response)


def search_response_to_pb(result: SearchResult) -> pb.SearchResponse:
    response = pb.SearchResponse()
    _fill_search_response(result, response)
    return response


def search_many_response_to_pb(results: Iterable[SearchResult]) -> pb.SearchManyResponse:
    response = pb.SearchManyResponse()
    for result in results:
        _fill_search_response(result, response.results.add())
    return response


def ingest_item_from_pb(item: pb.IngestItem) -> IngestItem:
    return IngestItem(item.id, item.image, item.label if item.HasField("label") else None, _scene_from_pb(item))


def ingest_summary_to_pb(summary: IngestSummary) -> pb.IngestSummary:
    return pb.IngestSummary(ingested=summary.ingested, replaced=summary.replaced, per_shard=summary.per_shard,
                            received=summary.received, failed_shards=summary.failed_shards,
                            uncertain_shards=summary.uncertain_shards)


def delete_response_to_pb(result: DeleteResult) -> pb.DeleteResponse:
    return pb.DeleteResponse(deleted=result.deleted, missing=result.missing)


def get_items_response_to_pb(result: GetResult) -> pb.GetItemsResponse:
    response = pb.GetItemsResponse(missing=result.missing)
    for found in result.items:
        item = found.item
        response.items.add(id=item.id, code=item.code, label=item.label, shard=found.shard,
                           metadata=_scene_to_pb(item.metadata), thumbnail=item.thumbnail)
    return response


def metadata_updates_from_pb(request: pb.UpdateMetadataRequest) -> list[MetadataUpdate]:
    return [MetadataUpdate(u.id, scene_from_pb(u.metadata)) for u in request.updates]


def update_metadata_response_to_pb(result: UpdateResult) -> pb.UpdateMetadataResponse:
    return pb.UpdateMetadataResponse(updated=result.updated, missing=result.missing)


def info_response_to_pb(info: Info) -> pb.InfoResponse:
    shards = [pb.ShardInfo(shard=s.shard, address=s.address, count=s.count, healthy=s.healthy)
              for s in info.shards]
    return pb.InfoResponse(model=model_info(info.model), shards=shards, total=info.total)


# -- shared by both sides ----------------------------------------------------------------------------


def encoding_from_pb(enc: pb.Encoding) -> Encoding:
    return Encoding(enc.code, tuple(enc.u), tuple(enc.probabilities), enc.label, enc.class_name, enc.thumbnail)


def encoding_to_pb(enc: Encoding) -> pb.Encoding:
    return pb.Encoding(code=enc.code, u=enc.u, probabilities=enc.probabilities, label=enc.label,
                       class_name=enc.class_name, thumbnail=enc.thumbnail)


def hit_from_pb(hit: pb.Hit) -> Hit:
    return Hit(hit.id, hit.distance, hit.label, hit.shard, hit.score, _scene_from_pb(hit), hit.thumbnail)


# -- calls to the index shards (gateway.clients) ---------------------------------------------------


def shard_search_request_to_pb(query: ShardQuery, packed: bool = True) -> pb.ShardSearchRequest:
    """``packed``: ask for the hits column-wise (used only without metadata and thumbnails)."""
    request = pb.ShardSearchRequest(codes=query.codes, k=query.k, bits=query.bits,
                                    model_version=query.model_version, u=query.u, candidates=query.candidates,
                                    filter=None if query.filter is None else filter_to_pb(query.filter),
                                    with_metadata=query.with_metadata,
                                    with_thumbnails=query.with_thumbnails,
                                    packed=packed and not (query.with_metadata or query.with_thumbnails))
    if query.max_distance is not None:
        request.max_distance = query.max_distance
    if query.label is not None:
        request.label = query.label
    return request


def shard_search_response_from_pb(reply: pb.ShardSearchResponse) -> list[list[Hit]] | list[HitColumns]:
    """One answer per query code: columns when the shard packed them, else hit objects."""
    if len(reply.packed):
        return [hit_columns_from_pb(p) for p in reply.packed]
    return [[hit_from_pb(h) for h in hits.hits] for hits in reply.results]


def hit_columns_from_pb(packed: pb.PackedHits) -> HitColumns:
    """Arrays over the message's bytes (no object per hit); a malformed message is refused."""
    distances = np.frombuffer(packed.distances, "<u4")
    n = distances.shape[0]
    id_ends = np.frombuffer(packed.id_ends, "<u4")
    labels = np.frombuffer(packed.labels, "<i4")
    scores = np.frombuffer(packed.scores, "<f4") if packed.scores else np.zeros(n, np.float32)
    bounds = [0, *id_ends.tolist()]
    if id_ends.shape[0] != n or labels.shape[0] != n or scores.shape[0] != n or bounds[-1] != len(packed.ids):
        raise ValueError(f"packed hits of shard {packed.shard} are inconsistent: {n} distances, "
                         f"{id_ends.shape[0]} id ends, {labels.shape[0]} labels, {len(packed.scores)} score bytes")
    if not _cut_into_text(packed.ids, id_ends):
        raise ValueError(f"packed hits of shard {packed.shard}: ids ({len(packed.ids)} bytes, {n} ends) are not "
                         "UTF-8 text cut at character starts by ascending ends")
    return HitColumns(packed.shard, packed.ids, bounds, distances, labels, scores)


def _cut_into_text(ids: bytes, ends: np.ndarray) -> bool:
    """Whether every id decodes: ends that never go back, each at a character's start, in UTF-8.
    The merge decodes only the ids it keeps, too late to call the shard's answer malformed."""
    if np.any(np.diff(ends.astype(np.int64)) < 0):
        return False
    try:
        ids.decode()
    except UnicodeDecodeError:
        return False
    inner = ends[ends < len(ids)]
    return not np.any((np.frombuffer(ids, np.uint8)[inner] & 0xC0) == 0x80)  # no cut before a continuation byte


def item_to_pb(item: StoredItem) -> pb.Item:
    return pb.Item(id=item.id, code=item.code, label=item.label, metadata=_scene_to_pb(item.metadata),
                   thumbnail=item.thumbnail)


def item_from_pb(item: pb.Item) -> StoredItem:
    return StoredItem(item.id, item.code, item.label, _scene_from_pb(item), item.thumbnail)


def shard_update_request_to_pb(updates: Iterable[MetadataUpdate]) -> pb.UpdateMetadataRequest:
    return pb.UpdateMetadataRequest(updates=[pb.MetadataUpdate(id=u.id, metadata=_scene_to_pb(u.metadata))
                                             for u in updates])
