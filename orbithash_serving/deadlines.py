"""An absolute time limit for writes, carried from the gateway to a shard in metadata.

gRPC's deadline travels as a *relative* timeout that the server counts from when it reads the
request, so a shard that was stopped (SIGSTOP, a long pause) would count it from when it wakes up
and apply a write its caller already gave up on. The caller also sends the Unix time after which
the write must not be applied; the shard uses whichever is earlier. Across hosts this relies on
synchronised clocks (NTP), as the shard's Redis deadline fence does.
"""

from __future__ import annotations

import math
import time

import grpc

NOT_AFTER_KEY = "orbithash-not-after"


def not_after_metadata(timeout: float) -> tuple[tuple[str, str]]:
    """Metadata for a write the caller will stop waiting for in ``timeout`` seconds."""
    return ((NOT_AFTER_KEY, f"{time.time() + timeout:.6f}"),)


def write_time_left(context: grpc.ServicerContext) -> float | None:
    """Seconds a write may still take: gRPC's deadline and the caller's absolute limit, if sent."""
    left = context.time_remaining()
    for key, value in context.invocation_metadata():
        if key == NOT_AFTER_KEY:
            try:
                limit = float(value)
            except ValueError:
                continue
            if not math.isfinite(limit):  # NaN or ±inf is no time, and NaN would survive min() below
                continue
            absolute = limit - time.time()
            left = absolute if left is None else min(left, absolute)
    return left
