"""The client's exceptions: one root, one subclass per gRPC status the gateway answers with.

Each carries the status ``code`` and the server's ``message`` (which names the offending item or
query by its position); a failed :meth:`~orbithash_client.OrbitHashClient.ingest` also carries
the :class:`~orbithash_client.IngestSummary` of what was stored before it failed.
"""

from __future__ import annotations

import grpc

from orbithash_client.types import IngestSummary


class OrbitHashClientError(Exception):
    """Root of every error the client raises for a failed call."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None,
                 summary: IngestSummary | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.summary = summary  # set for a failed ingest: what was stored before it failed


class InvalidArgument(OrbitHashClientError):
    """The request was refused as it is (bad id, image, code, k, metadata, filter); nothing changed."""


class NotFound(OrbitHashClientError):
    """A named item does not exist (a search by id)."""


class FailedPrecondition(OrbitHashClientError):
    """The cluster cannot take this now as it is (codes of another bit length or model version)."""


class ResourceExhausted(OrbitHashClientError):
    """The request asks for more than the server allows in one call; send it in smaller parts."""


class Unavailable(OrbitHashClientError):
    """The gateway, or every shard or the encoder behind it, cannot be reached; retried with backoff
    before it is raised."""


class DeadlineExceeded(OrbitHashClientError):
    """The call's deadline passed before it was answered (not retried: the time is spent)."""


class Unauthenticated(OrbitHashClientError):
    """No bearer token, or one the gateway does not accept (unknown, revoked or expired)."""


class PermissionDenied(OrbitHashClientError):
    """The token is valid but its role may not call this method (e.g. a reader deleting)."""


class Internal(OrbitHashClientError):
    """The server failed in a way it did not expect (INTERNAL, UNKNOWN, DATA_LOSS)."""


_BY_CODE: dict[grpc.StatusCode, type[OrbitHashClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
}


def status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a failed call (UNKNOWN for an error that is not a finished call)."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or ""
    return code, details


def error_for(code: grpc.StatusCode, message: str, summary: IngestSummary | None = None) -> OrbitHashClientError:
    """The exception for a status: its subclass (the root for statuses without one, e.g. CANCELLED)."""
    return _BY_CODE.get(code, OrbitHashClientError)(message or code.name, code, summary)


def from_rpc_error(exc: grpc.RpcError, context: str = "", summary: IngestSummary | None = None
                   ) -> OrbitHashClientError:
    """The client exception for a failed gRPC call; ``context`` is prefixed to the server's message."""
    code, details = status_of(exc)
    return error_for(code, f"{context}{details or code.name}", summary)
