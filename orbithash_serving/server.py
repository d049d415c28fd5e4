"""Server lifecycle shared by every service: health, reflection, metrics, graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from orbithash_api.v1 import orbithash_pb2
from orbithash_serving.access import PeerAdmission
from orbithash_serving.interceptor import AccessControl, GrpcMetrics, ServiceInterceptor
from orbithash_serving.limits import MAX_MESSAGE_BYTES
from orbithash_serving.settings import ServiceSettings
from orbithash_serving.tls import peer_names, server_credentials

S = TypeVar("S", bound=ServiceSettings)

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# Servers accept no compressed message (bit set 1: identity only; gRPC answers UNIMPLEMENTED). A
# kilobyte of gzip inflates to a megabyte before any size limit is checked, so a caller could make
# a service hold gigabytes for the price of a few hundred kilobytes; and what the services carry
# (images, hash codes) does not compress anyway.
NO_COMPRESSION = ("grpc.compression_enabled_algorithms_bitset", 1)
SERVER_OPTIONS = [*CHANNEL_OPTIONS, NO_COMPRESSION]

# Health of this name answers "is the process responsive" (Kubernetes liveness): SERVING from start
# to shutdown, whatever the dependencies do. The empty name and the service names answer "send me
# traffic" (readiness) and follow the dependency (Triton, Redis). A liveness probe that read
# readiness would restart every pod during a dependency outage.
LIVENESS_SERVICE = "liveness"

log = logging.getLogger("orbithash.server")


class GrpcServer:
    """A gRPC server with the conventions every OrbitHash service shares.

    ``add_servicers`` registers the service's own servicers; ``service_names`` are the full names
    (e.g. ``orbithash.v1.Gateway``) reported by health checking and reflection. ``access`` says who
    may call and how much (default: :func:`internal_access`, the rule of the internal services).
    """

    def __init__(self, settings: ServiceSettings, service_names: list[str],
                 add_servicers: Callable[[grpc.Server], None], registry: CollectorRegistry,
                 ready: Callable[[], bool] | None = None, on_stop: Callable[[], None] | None = None,
                 access: AccessControl | None = None) -> None:
        self.settings = settings
        self._ready = ready
        self._on_stop = on_stop  # releases what the service holds (channels, pools) after draining
        self.registry = registry
        self._service_names = service_names
        self._stopped = threading.Event()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers),
            interceptors=[ServiceInterceptor(GrpcMetrics(registry), access or internal_access(settings))],
            options=SERVER_OPTIONS,
        )
        add_servicers(self._server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], self._server)
        credentials = server_credentials(settings)
        self.tls = credentials is not None
        bind = f"{settings.host}:{settings.port}"
        self.port = (self._server.add_secure_port(bind, credentials) if credentials is not None
                     else self._server.add_insecure_port(bind))
        if self.port == 0:
            raise OSError(f"cannot bind gRPC port {bind}")
        self._health_server, self.health_port = self._plain_health_server(settings)
        self._metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host,
                                                    registry=registry)
        self.metrics_port = int(self._metrics_server.server_port)

    def _plain_health_server(self, settings: ServiceSettings) -> tuple[grpc.Server | None, int | None]:
        """Health checking alone on a plaintext port, for probes that cannot speak TLS."""
        if settings.health_port is None:
            return None, None
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[NO_COMPRESSION])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = server.add_insecure_port(f"{settings.host}:{settings.health_port}")
        if port == 0:
            raise OSError(f"cannot bind the health port {settings.host}:{settings.health_port}")
        return server, port

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def start(self) -> None:
        self._server.start()
        if self._health_server is not None:
            self._health_server.start()
        self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._set_health(True)
        if self._ready is not None:
            threading.Thread(target=self._watch_readiness, name="readiness", daemon=True).start()
        log.info("serving %s on %s, metrics on :%d", ",".join(self._service_names), self.address,
                 self.metrics_port)

    def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self._service_names]:
            self.health.set(name, status)

    def _watch_readiness(self, period: float = 2.0) -> None:
        """Health follows the dependency (Triton, Redis): NOT_SERVING takes a pod out of rotation."""
        assert self._ready is not None
        serving = True
        while not self._stopped.wait(period):
            try:
                now = bool(self._ready())
            except Exception:
                now = False
            if now != serving and not self._stopped.is_set():
                log.warning("dependency %s: health %s", "back" if now else "lost",
                            "SERVING" if now else "NOT_SERVING")
                self._set_health(now)
                serving = now

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first so load balancers stop sending, then drain in-flight RPCs."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self._server.stop(self.settings.grace_s if grace is None else grace).wait()
        if self._health_server is not None:
            self._health_server.stop(0).wait()
        if self._on_stop is not None:
            self._on_stop()
        self._metrics_server.shutdown()
        log.info("stopped %s", self.address)

    def serve_forever(self) -> None:
        """Block until SIGTERM/SIGINT, then stop gracefully."""
        done = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %d: shutting down", signum)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        done.wait()
        self.stop()


def internal_access(settings: ServiceSettings) -> AccessControl:
    """Behind mutual TLS only a certificate of the cluster (and of ``allowed_peers``) may call;
    otherwise everyone, named by address."""
    if settings.tls_client_auth:
        return AccessControl(admission=PeerAdmission(settings.peer_names(), peer_names))
    return AccessControl()


def run_service(settings_class: type[S], build_server: Callable[[S], GrpcServer],
                argv: list[str] | None = None) -> int:
    """Entry point shared by every ``python -m <service>``: settings, logging, serve until SIGTERM."""
    settings = settings_class.from_argv(argv)
    configure_logging(settings.log_level)
    server = build_server(settings)
    server.start()
    server.serve_forever()
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def service_name(service: str) -> str:
    return orbithash_pb2.DESCRIPTOR.services_by_name[service].full_name
