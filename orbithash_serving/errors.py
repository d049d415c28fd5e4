"""The one place where OrbitHash exceptions become gRPC status codes."""

from __future__ import annotations

import grpc

from orbithash import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    Mismatch,
    NotFound,
    ResourceExhausted,
    TritonFailure,
    Unavailable,
)
from orbithash.model_facts import ModelFactsError
from orbithash_serving.access import PermissionDenied, Unauthenticated

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Mismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (ModelFactsError, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TritonFailure, grpc.StatusCode.INTERNAL),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status and message for an exception; unknown errors hide their internals."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        # A downstream call failed: pass its status on (its message says which service).
        code = exc.code()
        detail = exc.details() if hasattr(exc, "details") else ""
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return code, f"downstream: {detail}"
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return code, detail
        return grpc.StatusCode.INTERNAL, f"downstream error {code.name}"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"
