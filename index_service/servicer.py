"""Thin gRPC adapter over :class:`index_service.shard.Shard`."""

from __future__ import annotations

import grpc
import numpy as np

from index_service.shard import Shard, ShardHit
from orbithash.index import Ranked
from orbithash.metadata import SceneMeta
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.convert import filter_from_pb, scene_from_pb, scene_to_pb
from orbithash_serving.deadlines import write_time_left
from orbithash_serving.limits import fitting_thumbnails


def _metadata_pb(meta: SceneMeta | None) -> pb.SceneMetadata | None:
    """Set only when asked for and the item has some."""
    return None if meta is None or meta.is_empty else scene_to_pb(meta)


def _hit_pb(h: ShardHit, shard: int) -> pb.Hit:
    return pb.Hit(id=h.id, distance=h.distance, label=h.label, shard=shard, score=h.score,
                  metadata=_metadata_pb(h.metadata), thumbnail=h.thumbnail)


def _ranked_pb(ranked: Ranked, shard: int) -> pb.PackedHits:
    """The index's columns as they are: no Python object per hit on the way out."""
    ids, ends = ranked.joined_ids()
    return pb.PackedHits(shard=shard, ids=ids, id_ends=ends.astype("<u4", copy=False).tobytes(),
                         distances=ranked.distances.astype("<u4", copy=False).tobytes(),
                         labels=ranked.labels.astype("<i4", copy=False).tobytes())


def _packed_pb(hits: list[ShardHit], shard: int, reranked: bool) -> pb.PackedHits:
    """The hits column-wise: raw little-endian arrays and one blob of ids, no message per hit."""
    n = len(hits)
    ids = [h.id.encode() for h in hits]
    ends = np.fromiter(map(len, ids), np.uint32, n).cumsum(dtype=np.uint32)
    return pb.PackedHits(
        shard=shard, ids=b"".join(ids), id_ends=ends.astype("<u4", copy=False).tobytes(),
        distances=np.fromiter((h.distance for h in hits), "<u4", n).tobytes(),
        labels=np.fromiter((h.label for h in hits), "<i4", n).tobytes(),
        scores=np.fromiter((h.score for h in hits), "<f4", n).tobytes() if reranked else b"")


class IndexShardServicer(rpc.IndexShardServicer):
    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    def Add(self, request: pb.AddRequest, context: grpc.ServicerContext) -> pb.AddResponse:
        items = request.items
        added, replaced = self._shard.add([i.id for i in items], [i.code for i in items],
                                          [i.label for i in items], request.bits, request.model_version,
                                          write_time_left(context), [scene_from_pb(i.metadata) for i in items],
                                          [i.thumbnail for i in items])
        return pb.AddResponse(added=added, replaced=replaced)

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        deleted, missing = self._shard.delete(list(request.ids), write_time_left(context))
        return pb.DeleteResponse(deleted=len(deleted), missing=missing)

    def Search(self, request: pb.ShardSearchRequest, context: grpc.ServicerContext) -> pb.ShardSearchResponse:
        shard = self._shard.shard
        if request.packed and not (request.with_metadata or request.with_thumbnails or len(request.u)):
            found = self._shard.search_ranked(
                list(request.codes), request.k, request.max_distance if request.HasField("max_distance") else None,
                request.label if request.HasField("label") else None, request.bits, request.model_version,
                filter_from_pb(request.filter) if request.HasField("filter") else None)
            return pb.ShardSearchResponse(packed=[_ranked_pb(ranked, shard) for ranked in found])
        results = self._shard.search(
            list(request.codes), request.k,
            request.max_distance if request.HasField("max_distance") else None,
            request.label if request.HasField("label") else None,
            request.bits, request.model_version, request.u, request.candidates,
            filter_from_pb(request.filter) if request.HasField("filter") else None,
            request.with_metadata, request.with_thumbnails)
        if request.packed and not (request.with_metadata or request.with_thumbnails):
            reranked = len(request.u) > 0
            return pb.ShardSearchResponse(packed=[_packed_pb(hits, shard, reranked) for hits in results])
        reply = pb.ShardSearchResponse(results=[pb.HitList(hits=[_hit_pb(h, shard) for h in hits]) for hits in results])
        return fitting_thumbnails(reply) if request.with_thumbnails else reply

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        s = self._shard
        return pb.StatsResponse(shard=s.shard, count=len(s), bits=s.bits, model_version=s.model_version,
                                ready=s.ready)

    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.GetResponse:
        found, missing = self._shard.get(list(request.ids), request.with_metadata, request.with_thumbnails)
        reply = pb.GetResponse(items=[pb.Item(id=i.id, code=i.code, label=i.label, metadata=_metadata_pb(i.metadata),
                                              thumbnail=i.thumbnail) for i in found],
                               missing=missing)
        return fitting_thumbnails(reply) if request.with_thumbnails else reply

    def UpdateMetadata(self, request: pb.UpdateMetadataRequest,
                       context: grpc.ServicerContext) -> pb.UpdateMetadataResponse:
        updates = request.updates
        updated, missing = self._shard.update_metadata([u.id for u in updates],
                                                       [scene_from_pb(u.metadata) for u in updates],
                                                       write_time_left(context))
        return pb.UpdateMetadataResponse(updated=len(updated), missing=missing)
