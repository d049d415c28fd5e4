"""``python -m gateway``: run the public gateway."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry

from gateway.clients import EncoderClient, ShardClient, wait_for_model
from gateway.core import Gateway, Limits
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.server import GrpcServer, run_service, service_name


def build_gateway(settings: GatewaySettings, registry: CollectorRegistry) -> Gateway:
    """Connect to the encoder and the shards; returns once the encoder has said which model it serves."""
    encoder = EncoderClient(settings.encoder)
    shards = [ShardClient(shard, address) for shard, address in enumerate(settings.shard_addresses())]
    facts = wait_for_model(encoder, settings.startup_timeout_s)
    limits = Limits(max_k=settings.max_k, timeout_s=settings.timeout_s, ingest_batch=settings.ingest_batch,
                    encode_bytes=settings.encode_bytes, max_ingest_items=settings.max_ingest_items,
                    write_batch=settings.write_batch, thumbnail_size=settings.thumbnail_size,
                    max_stream_bytes=settings.max_stream_bytes, max_queries=settings.max_queries,
                    max_hits=settings.max_hits, max_ids=settings.max_ids)
    return Gateway(encoder, shards, facts, limits, registry, concurrency=settings.workers)


def build_server(settings: GatewaySettings) -> GrpcServer:
    registry = CollectorRegistry()
    gateway = build_gateway(settings, registry)
    servicer = GatewayServicer(gateway)
    return GrpcServer(settings, [service_name("Gateway")],
                      lambda server: rpc.add_GatewayServicer_to_server(servicer, server), registry,
                      on_stop=gateway.close)


def main(argv: list[str] | None = None) -> int:
    return run_service(GatewaySettings, build_server, argv)


if __name__ == "__main__":
    sys.exit(main())
