"""One server interceptor for every method: admission (who calls, may they, within their limits),
exception → status, request that does not parse → INVALID_ARGUMENT (grpc would answer INTERNAL
"Exception deserializing request!"), and Prometheus metrics.

Health checking and reflection pass untouched: probes and tools need neither token nor limits.

Metric names follow go-grpc-prometheus (``grpc_server_handled_total``,
``grpc_server_handling_seconds``) so existing Grafana dashboards work unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Histogram

from orbithash import InvalidInput, OrbitHashError
from orbithash_serving.access import Admission, OpenAdmission, Principal, reset_current_principal, set_current_principal
from orbithash_serving.errors import status_for
from orbithash_serving.limits import RateLimiter, StreamSlots, check_message_size

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


@dataclass
class AccessControl:
    """Who may call, and how much: the service decides, the interceptor applies it to every call.

    The defaults admit everyone, named by address, with no limits (the internal services behind
    mutual TLS choose :class:`~orbithash_serving.access.PeerAdmission` instead).
    """

    admission: Admission = field(default_factory=OpenAdmission)
    rate: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))
    streams: StreamSlots = field(default_factory=lambda: StreamSlots(0))
    message_limits: Mapping[str, int] = field(default_factory=dict)  # method → bytes of one request message


class Undecodable:
    """Stands in for a request message that is refused before parsing: too large, or not parsable
    (e.g. a string field that is not UTF-8). Raised once the caller has been admitted."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str,
              limits: Mapping[str, int]) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            check_message_size(method, len(data), limits)
            return deserializer(data)
        except DecodeError:
            return Undecodable(InvalidInput(_why_unparsable(data, method)))
        except Exception as exc:  # ResourceExhausted, and whatever else a deserializer raises
            return Undecodable(exc)

    return parse


def _why_unparsable(data: bytes, method: str) -> str:
    """What is wrong with request bytes protobuf refused: its own error names only the message type.
    ``Empty`` keeps every field as an unknown one, so it parses any well-formed bytes whatever their
    text: bytes it accepts failed on a string field's UTF-8, the only check left."""
    try:
        empty_pb2.Empty.FromString(data)
    except DecodeError:
        return (f"the {method} request is not a well-formed protobuf message (cut off or corrupted bytes); "
                "send it again from a protobuf library")
    return f"the {method} request does not parse as its message type: a string field (an id) must be valid UTF-8"


def _refuse(request: Any, method: str) -> Any:
    if isinstance(request, Undecodable):
        if isinstance(request.error, OrbitHashError):
            raise request.error
        raise InvalidInput(f"the {method} request does not parse as its message type ({request.error})")
    return request


def _checked_stream(requests: Any, method: str) -> Any:
    for request in requests:
        yield _refuse(request, method)


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: GrpcMetrics, access: AccessControl | None = None) -> None:
        self._metrics = metrics
        self._access = access or AccessControl()
        self._handlers: dict[str, tuple[Any, Any]] = {}  # method → (service's handler, wrapped)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        # grpc asks for every call: the wrapped handler is built once per method and kept, keyed by
        # the service's own handler so a changed registration is never served stale.
        cached = self._handlers.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap_handler(handler, details.method)
        self._handlers[details.method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(self, handler: Any, full_method: str) -> Any:
        service, _, method = full_method.lstrip("/").rpartition("/")
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
                return handler._replace(**{attr: wrapped, "request_deserializer": _tolerant(
                    handler.request_deserializer, method, self._access.message_limits)})
        return handler

    def _wrap(self, behaviour: Callable[..., Any], service: str, method: str, kind: str,
              streaming_out: bool, streaming_in: bool) -> Callable[..., Any]:
        m = self._metrics
        labels = (service, method, kind)
        started, seconds = m.started.labels(*labels), m.seconds.labels(*labels)
        handled: dict[grpc.StatusCode, Any] = {}  # code → counter child, bound on first use
        access = self._access
        streaming = streaming_in or streaming_out

        @contextmanager
        def admitted(context: grpc.ServicerContext) -> Iterator[Principal]:
            principal = access.admission.admit(method, context)
            access.rate.take(principal.name)
            token = set_current_principal(principal)
            try:
                if streaming:
                    with access.streams.hold(principal.name, method):
                        yield principal
                else:
                    yield principal
            finally:
                reset_current_principal(token)

        def call(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            if streaming_in:
                return behaviour(_checked_stream(request_or_iterator, method), context)
            return behaviour(_refuse(request_or_iterator, method), context)

        def finish(start: float, code: grpc.StatusCode) -> None:
            child = handled.get(code)
            if child is None:
                child = handled[code] = m.handled.labels(*labels, code.name)
            child.inc()
            seconds.observe(time.perf_counter() - start)

        def fail(exc: Exception, context: grpc.ServicerContext, start: float) -> None:
            if context.is_active():
                code, message = status_for(exc)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("%s/%s failed", service, method)
            else:  # the caller cancelled or its deadline passed (a stream's read then fails): not a fault
                code, message = _ended_by_caller(context)
            finish(start, code)
            context.abort(code, message)

        def unary_out(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            started.inc()
            start = time.perf_counter()
            try:
                with admitted(context):
                    response = call(request_or_iterator, context)
            except Exception as exc:
                if _is_abort(exc, context):
                    finish(start, context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                fail(exc, context, start)
            finish(start, context.code() or (grpc.StatusCode.OK if context.is_active()
                                             else _ended_by_caller(context)[0]))
            return response

        def stream_out(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            started.inc()
            start = time.perf_counter()
            try:
                with admitted(context):
                    yield from call(request_or_iterator, context)
            except Exception as exc:
                if _is_abort(exc, context):
                    finish(start, context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                fail(exc, context, start)
            # A cancelled caller can also end the request stream as if it had closed it: the handler
            # then returns normally, but nobody receives the answer.
            finish(start, grpc.StatusCode.OK if context.is_active() else _ended_by_caller(context)[0])

        return stream_out if streaming_out else unary_out


def _ended_by_caller(context: grpc.ServicerContext) -> tuple[grpc.StatusCode, str]:
    left = context.time_remaining()
    if left is not None and left <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the caller's deadline passed"
    return grpc.StatusCode.CANCELLED, "the caller cancelled the call"


def _is_abort(exc: Exception, context: grpc.ServicerContext) -> bool:
    """context.abort() raises a bare Exception after setting the code: let it through."""
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK and type(exc) is Exception
