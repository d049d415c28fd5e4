"""``python -m gateway``: run the public gateway."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry

from gateway.router import Router
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.server import GrpcServer, run_service, service_name


def build_server(settings: GatewaySettings) -> GrpcServer:
    registry = CollectorRegistry()
    servicer = GatewayServicer(Router(settings, registry))
    return GrpcServer(settings, [service_name("Gateway")],
                      lambda server: rpc.add_GatewayServicer_to_server(servicer, server), registry)


def main(argv: list[str] | None = None) -> int:
    return run_service(GatewaySettings, build_server, argv)


if __name__ == "__main__":
    sys.exit(main())
