"""One server interceptor for every method: exception → status, request that does not parse →
INVALID_ARGUMENT (grpc would answer INTERNAL "Exception deserializing request!"), and Prometheus
metrics.

Metric names follow go-grpc-prometheus (``grpc_server_handled_total``,
``grpc_server_handling_seconds``) so existing Grafana dashboards work unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from orbithash import InvalidInput
from orbithash_serving.errors import status_for

log = logging.getLogger("orbithash.rpc")


class GrpcMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_service", "grpc_method", "grpc_type")
        self.started = Counter("grpc_server_started", "RPCs started on the server.", labels,
                               registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                               (*labels, "grpc_code"), registry=registry)
        self.seconds = Histogram(
            "grpc_server_handling_seconds", "Time from RPC start to its response.", labels,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )


class Undecodable:
    """Stands in for a request message that does not parse (e.g. a string field that is not UTF-8)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            return Undecodable(exc)

    return parse


def _refuse(request: Any, method: str) -> Any:
    if isinstance(request, Undecodable):
        raise InvalidInput(f"the {method} request does not parse as its message type: a string field "
                           f"(an id) must be valid UTF-8 ({request.error})")
    return request


def _checked_stream(requests: Any, method: str) -> Any:
    for request in requests:
        yield _refuse(request, method)


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: GrpcMetrics) -> None:
        self._metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        if service.startswith(("grpc.health", "grpc.reflection")):
            return handler
        kinds = {
            "unary_unary": "unary", "unary_stream": "server_stream",
            "stream_unary": "client_stream", "stream_stream": "bidi_stream",
        }
        for attr, kind in kinds.items():
            behaviour = getattr(handler, attr)
            if behaviour is not None:
                wrapped = self._wrap(behaviour, service, method, kind, streaming_out=attr.endswith("stream"),
                                     streaming_in=attr.startswith("stream"))
                return handler._replace(**{attr: wrapped,
                                           "request_deserializer": _tolerant(handler.request_deserializer)})
        return handler

    def _wrap(self, behaviour: Callable[..., Any], service: str, method: str, kind: str,
              streaming_out: bool, streaming_in: bool) -> Callable[..., Any]:
        m = self._metrics
        labels = (service, method, kind)

        def call(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            if streaming_in:
                return behaviour(_checked_stream(request_or_iterator, method), context)
            return behaviour(_refuse(request_or_iterator, method), context)

        def finish(start: float, code: grpc.StatusCode) -> None:
            m.handled.labels(*labels, code.name).inc()
            m.seconds.labels(*labels).observe(time.perf_counter() - start)

        def fail(exc: Exception, context: grpc.ServicerContext, start: float) -> None:
            code, message = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s/%s failed", service, method)
            finish(start, code)
            context.abort(code, message)

        def unary_out(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            m.started.labels(*labels).inc()
            start = time.perf_counter()
            try:
                response = call(request_or_iterator, context)
            except Exception as exc:
                if _is_abort(exc, context):
                    finish(start, context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                fail(exc, context, start)
            finish(start, context.code() or grpc.StatusCode.OK)
            return response

        def stream_out(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            m.started.labels(*labels).inc()
            start = time.perf_counter()
            try:
                yield from call(request_or_iterator, context)
            except Exception as exc:
                if _is_abort(exc, context):
                    finish(start, context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                fail(exc, context, start)
            finish(start, grpc.StatusCode.OK)

        return stream_out if streaming_out else unary_out


def _is_abort(exc: Exception, context: grpc.ServicerContext) -> bool:
    """context.abort() raises a bare Exception after setting the code: let it through."""
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK and type(exc) is Exception
