"""``python -m index_service``: run one index shard."""

from __future__ import annotations

import sys

import redis
from prometheus_client import CollectorRegistry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from index_service.servicer import IndexShardServicer
from index_service.settings import IndexSettings
from index_service.shard import Shard
from index_service.store import ShardStore
from orbithash.index import warm_up
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.server import GrpcServer, run_service, service_name


def build_server(settings: IndexSettings) -> GrpcServer:
    registry = CollectorRegistry()
    client = redis.Redis.from_url(
        settings.redis_url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    probe = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    store = ShardStore(client, settings.shard, settings.bits, settings.model_version, settings.namespace, probe)
    shard = Shard(settings.shard, store, settings.bits, settings.model_version, settings.max_k,
                  settings.max_batch, registry)
    warm_up()
    shard.open()
    servicer = IndexShardServicer(shard)
    return GrpcServer(settings, [service_name("IndexShard")],
                      lambda server: rpc.add_IndexShardServicer_to_server(servicer, server), registry,
                      ready=shard.probe)


def main(argv: list[str] | None = None) -> int:
    return run_service(IndexSettings, build_server, argv)


if __name__ == "__main__":
    sys.exit(main())
