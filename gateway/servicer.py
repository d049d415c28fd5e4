"""Thin gRPC adapter over :class:`gateway.router.Router`."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from gateway.router import Router
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.convert import model_info


class GatewayServicer(rpc.GatewayServicer):
    def __init__(self, router: Router) -> None:
        self._router = router

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        result = self._router.search(request, context.time_remaining())
        return pb.SearchResponse(hits=result.hits, query=result.query, partial=bool(result.failed_shards),
                                 failed_shards=result.failed_shards, model_version=self._router.facts.version)

    def Ingest(self, request_iterator: Iterator[pb.IngestItem], context: grpc.ServicerContext) -> pb.IngestSummary:
        result = self._router.ingest(request_iterator, context.time_remaining())
        return pb.IngestSummary(ingested=result.ingested, replaced=result.replaced, per_shard=result.per_shard)

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        deleted, missing = self._router.delete(list(request.ids), context.time_remaining())
        return pb.DeleteResponse(deleted=deleted, missing=missing)

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        shards = [
            pb.ShardInfo(shard=shard, address=address, count=stats.count if stats else 0, healthy=stats is not None)
            for shard, address, stats in self._router.shard_stats(context.time_remaining())
        ]
        return pb.InfoResponse(model=model_info(self._router.facts), shards=shards,
                               total=sum(s.count for s in shards))
