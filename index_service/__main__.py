"""``python -m index_service``: run one index shard."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry

from index_service.redis_connection import access_errors, redis_clients
from index_service.servicer import IndexShardServicer
from index_service.settings import IndexSettings
from index_service.shard import Shard
from index_service.store import ShardStore
from orbithash.index import warm_up
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.server import GrpcServer, run_service, service_name


def build_server(settings: IndexSettings) -> GrpcServer:
    registry = CollectorRegistry()
    client, probe = redis_clients(settings)
    store = ShardStore(client, settings.shard, settings.bits, settings.model_version, settings.namespace, probe,
                       max_string_bytes=settings.redis_max_string_mb * 2**20)
    shard = Shard(settings.shard, store, settings.bits, settings.model_version, settings.max_k,
                  settings.max_batch, registry)
    warm_up()
    with access_errors(settings):
        shard.open()
    servicer = IndexShardServicer(shard)
    return GrpcServer(settings, [service_name("IndexShard")],
                      lambda server: rpc.add_IndexShardServicer_to_server(servicer, server), registry,
                      ready=shard.probe)


def main(argv: list[str] | None = None) -> int:
    return run_service(IndexSettings, build_server, argv)


if __name__ == "__main__":
    sys.exit(main())
