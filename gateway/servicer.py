"""The public gRPC API: each method converts the message, calls :class:`gateway.core.Gateway`, and
converts the answer back. Errors become statuses in the shared interceptor. A write sent again with
the same request id gets its first reply (:mod:`gateway.replay`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from gateway import convert
from gateway.audit import audited
from gateway.core import Gateway, IngestIncomplete, IngestItem
from gateway.replay import Key, RecentReplies, StreamDigest, message_digest, request_key
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.access import current_principal
from orbithash_serving.limits import fitting_thumbnails

# Trailing metadata of a failed Ingest: the IngestSummary of what was stored (see the proto).
INGEST_SUMMARY_KEY = "orbithash-ingest-summary-bin"
M = TypeVar("M", bound=Message)


def _size(reply: Message) -> int:
    return reply.ByteSize()


class GatewayServicer(rpc.GatewayServicer):
    def __init__(self, gateway: Gateway, replies: RecentReplies | None = None) -> None:
        self._gateway = gateway
        self._replies = replies or RecentReplies()

    def _key(self, method: str, context: grpc.ServicerContext) -> Key | None:
        who = current_principal()
        return request_key(context.invocation_metadata() or (), who.name if who else context.peer(), method)

    def _once(self, method: str, context: grpc.ServicerContext, run: Callable[[], M], request: Message) -> M:
        """``run()`` once per request id of this caller (see gateway.replay), for a unary write whose
        message must be the same on every try."""
        key = self._key(method, context)
        digest = message_digest(request) if key else b""
        return self._replies.once(key, run, context.time_remaining(), _size, digest)

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        result = self._gateway.search(convert.search_request_from_pb(request), context.time_remaining())
        reply = convert.search_response_to_pb(result)
        return fitting_thumbnails(reply) if request.with_thumbnails else reply

    def Ingest(self, request_iterator: Iterator[pb.IngestItem], context: grpc.ServicerContext) -> pb.IngestSummary:
        key = self._key("Ingest", context)
        if key is None:
            return self._ingest(request_iterator, context)
        # With a request id, the stream is hashed as it is read, so a try with other items is refused.
        stream = StreamDigest(request_iterator, self._gateway.limits.max_ingest_items)
        return self._replies.once(key, lambda: self._ingest(iter(stream), context), context.time_remaining(),
                                  _size, stream.digest)

    def _ingest(self, request_iterator: Iterator[pb.IngestItem], context: grpc.ServicerContext) -> pb.IngestSummary:
        received = 0

        def items() -> Iterator[IngestItem]:
            nonlocal received
            for item in request_iterator:
                received += 1
                yield convert.ingest_item_from_pb(item)

        with audited("ingest") as audit:
            try:
                summary = self._gateway.ingest(items(), context.time_remaining())
            except IngestIncomplete as exc:  # the status says why; the summary what was stored
                audit.note(received=exc.summary.received, stored=exc.summary.ingested,
                           replaced=exc.summary.replaced, failed_shards=exc.summary.failed_shards,
                           uncertain_shards=exc.summary.uncertain_shards)
                stored = convert.ingest_summary_to_pb(exc.summary).SerializeToString()
                context.set_trailing_metadata(((INGEST_SUMMARY_KEY, stored),))
                raise exc.error from exc
            except BaseException:
                audit.note(received=received, stored=0)
                raise
            audit.note(received=summary.received, stored=summary.ingested, replaced=summary.replaced)
        return convert.ingest_summary_to_pb(summary)

    def SearchMany(self, request: pb.SearchManyRequest, context: grpc.ServicerContext) -> pb.SearchManyResponse:
        results = self._gateway.search_many(convert.search_many_request_from_pb(request), context.time_remaining())
        reply = convert.search_many_response_to_pb(results)
        return fitting_thumbnails(reply) if request.with_thumbnails else reply

    def Get(self, request: pb.GetItemsRequest, context: grpc.ServicerContext) -> pb.GetItemsResponse:
        result = self._gateway.get(list(request.ids), request.with_thumbnails, context.time_remaining())
        reply = convert.get_items_response_to_pb(result)
        return fitting_thumbnails(reply) if request.with_thumbnails else reply

    def UpdateMetadata(self, request: pb.UpdateMetadataRequest,
                       context: grpc.ServicerContext) -> pb.UpdateMetadataResponse:
        def run() -> pb.UpdateMetadataResponse:
            with audited("update_metadata", requested=len(request.updates)) as audit:
                result = self._gateway.update_metadata(convert.metadata_updates_from_pb(request),
                                                       context.time_remaining())
                audit.note(updated=result.updated, missing=len(result.missing))
            return convert.update_metadata_response_to_pb(result)

        return self._once("UpdateMetadata", context, run, request)

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        def run() -> pb.DeleteResponse:
            with audited("delete", requested=len(request.ids)) as audit:
                result = self._gateway.delete(list(request.ids), context.time_remaining())
                audit.note(deleted=result.deleted, missing=len(result.missing))
            return convert.delete_response_to_pb(result)

        return self._once("Delete", context, run, request)

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        return convert.info_response_to_pb(self._gateway.info(context.time_remaining()))
