"""``python -m gateway``: run the public gateway."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry

from gateway.clients import EncoderClient, ShardClient, wait_for_model
from gateway.coalesce import CoalescingEncoder, CoalescingShard, batch_histogram
from gateway.core import Encoder, Gateway, Limits, Shard
from gateway.roles import METHOD_ROLES
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.access import OpenAdmission, TokenAdmission, TokenBook
from orbithash_serving.interceptor import AccessControl
from orbithash_serving.limits import RateLimiter, StreamSlots, parse_message_limits
from orbithash_serving.server import GrpcServer, run_service, service_name
from orbithash_serving.tls import client_credentials


def build_gateway(settings: GatewaySettings, registry: CollectorRegistry) -> Gateway:
    """Connect to the encoder and the shards; returns once the encoder has said which model it serves."""
    credentials = client_credentials(settings)
    encoder: Encoder = EncoderClient(settings.encoder, credentials)
    shards: list[Shard] = [ShardClient(shard, address, credentials=credentials)
                           for shard, address in enumerate(settings.shard_addresses())]
    facts = wait_for_model(encoder, settings.startup_timeout_s)
    if settings.coalesce_inflight:
        histogram = batch_histogram(registry)
        encoder = CoalescingEncoder(encoder, max_images=settings.max_queries, max_bytes=settings.encode_bytes,
                                    max_inflight=settings.coalesce_inflight, histogram=histogram)
        shards = [CoalescingShard(s, number, max_codes=settings.max_queries, max_inflight=settings.coalesce_inflight,
                                  histogram=histogram) for number, s in enumerate(shards)]
    limits = Limits(max_k=settings.max_k, timeout_s=settings.timeout_s, ingest_batch=settings.ingest_batch,
                    encode_bytes=settings.encode_bytes, max_ingest_items=settings.max_ingest_items,
                    write_batch=settings.write_batch, thumbnail_size=settings.thumbnail_size,
                    max_stream_bytes=settings.max_stream_bytes, max_queries=settings.max_queries,
                    max_hits=settings.max_hits, max_ids=settings.max_ids)
    return Gateway(encoder, shards, facts, limits, registry, concurrency=settings.workers)


def public_access(settings: GatewaySettings) -> AccessControl:
    """Tokens with roles when a token file is set (else callers are named by address), and the
    per-client limits either way."""
    admission = (TokenAdmission(TokenBook(settings.tokens_file), METHOD_ROLES) if settings.tokens_file
                 else OpenAdmission())
    return AccessControl(admission=admission,
                         rate=RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst),
                         streams=StreamSlots(settings.max_streams_per_client),
                         message_limits=parse_message_limits(settings.message_limits_mb))


def build_server(settings: GatewaySettings) -> GrpcServer:
    registry = CollectorRegistry()
    access = public_access(settings)  # a bad token file stops the start before any connection
    gateway = build_gateway(settings, registry)
    servicer = GatewayServicer(gateway)
    return GrpcServer(settings, [service_name("Gateway")],
                      lambda server: rpc.add_GatewayServicer_to_server(servicer, server), registry,
                      on_stop=gateway.close, access=access)


def main(argv: list[str] | None = None) -> int:
    return run_service(GatewaySettings, build_server, argv)


if __name__ == "__main__":
    sys.exit(main())
