"""Proto messages ↔ the gateway's plain types, both for its public API and for the calls it makes."""

from __future__ import annotations

from gateway.core import (
    ByCode,
    ById,
    ByImage,
    DeleteResult,
    Encoding,
    Hit,
    Info,
    IngestItem,
    IngestSummary,
    Query,
    SearchRequest,
    SearchResult,
    ShardQuery,
    StoredItem,
)
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_serving.convert import model_info

# -- the public API (gateway.servicer) -------------------------------------------------------------


def _query_from_pb(request: pb.SearchRequest) -> Query | None:
    kind = request.WhichOneof("query")
    if kind == "image":
        return ByImage(request.image)
    if kind == "code":
        return ByCode(request.code)
    if kind == "id":
        return ById(request.id)
    return None  # the core says what is missing


def search_request_from_pb(request: pb.SearchRequest) -> SearchRequest:
    return SearchRequest(
        query=_query_from_pb(request), k=request.k,
        max_distance=request.max_distance if request.HasField("max_distance") else None,
        label=request.label if request.HasField("label") else None,
        rerank=request.rerank, rerank_candidates=request.rerank_candidates,
    )


def search_response_to_pb(result: SearchResult) -> pb.SearchResponse:
    response = pb.SearchResponse(
        query=encoding_to_pb(result.query) if result.query is not None else None,
        partial=result.partial, failed_shards=result.failed_shards, model_version=result.model_version,
    )
    add = response.hits.add  # in place: k may be in the thousands, and copying built messages costs more
    for h in result.hits:
        add(id=h.id, distance=h.distance, label=h.label, shard=h.shard, score=h.score)
    return response


def ingest_item_from_pb(item: pb.IngestItem) -> IngestItem:
    return IngestItem(item.id, item.image, item.label if item.HasField("label") else None)


def ingest_summary_to_pb(summary: IngestSummary) -> pb.IngestSummary:
    return pb.IngestSummary(ingested=summary.ingested, replaced=summary.replaced, per_shard=summary.per_shard,
                            received=summary.received, failed_shards=summary.failed_shards)


def delete_response_to_pb(result: DeleteResult) -> pb.DeleteResponse:
    return pb.DeleteResponse(deleted=result.deleted, missing=result.missing)


def info_response_to_pb(info: Info) -> pb.InfoResponse:
    shards = [pb.ShardInfo(shard=s.shard, address=s.address, count=s.count, healthy=s.healthy)
              for s in info.shards]
    return pb.InfoResponse(model=model_info(info.model), shards=shards, total=info.total)


# -- shared by both sides ----------------------------------------------------------------------------


def encoding_from_pb(enc: pb.Encoding) -> Encoding:
    return Encoding(enc.code, tuple(enc.u), tuple(enc.probabilities), enc.label, enc.class_name)


def encoding_to_pb(enc: Encoding) -> pb.Encoding:
    return pb.Encoding(code=enc.code, u=enc.u, probabilities=enc.probabilities, label=enc.label,
                       class_name=enc.class_name)


def hit_from_pb(hit: pb.Hit) -> Hit:
    return Hit(hit.id, hit.distance, hit.label, hit.shard, hit.score)



# -- calls to the index shards (gateway.clients) ---------------------------------------------------


def shard_search_request_to_pb(query: ShardQuery) -> pb.ShardSearchRequest:
    request = pb.ShardSearchRequest(codes=[query.code], k=query.k, bits=query.bits,
                                    model_version=query.model_version, u=query.u, candidates=query.candidates)
    if query.max_distance is not None:
        request.max_distance = query.max_distance
    if query.label is not None:
        request.label = query.label
    return request


def item_to_pb(item: StoredItem) -> pb.Item:
    return pb.Item(id=item.id, code=item.code, label=item.label)


def item_from_pb(item: pb.Item) -> StoredItem:
    return StoredItem(item.id, item.code, item.label)
