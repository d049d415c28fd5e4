"""Limits per client that hold under abuse: a request rate (token bucket), concurrent streams, and
the size of one request message per method, and of a reply with thumbnails. Each refusal is
RESOURCE_EXHAUSTED with what was exceeded and when to retry or what to ask for instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from google.protobuf.message import Message

from orbithash import ResourceExhausted
from orbithash.metadata import MAX_THUMBNAIL_BYTES

MIB = 1024 * 1024
MAX_MESSAGE_BYTES = 256 * MIB  # one message, either way, on every channel and server of the cluster
MAX_TRACKED_CLIENTS = 100_000  # rate buckets kept at most, least recently used dropped first


class RateLimiter:
    """A token bucket per client: ``rate`` requests a second, bursts of up to ``burst``.

    ``rate`` 0 turns it off. At most ``max_clients`` buckets are kept, least recently used first
    out, so a stream of new client names (addresses of an IPv6 prefix) costs O(1) a call and bounded
    memory; a client pushed out that way gets a full bucket again, as an idle one would.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self.max_clients = max(max_clients, 1)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (tokens, at), oldest first

    @property
    def tracked(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> None:
        if self.rate <= 0:
            return
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            self._forget(now)
        if not allowed:
            wait_ms = math.ceil((1.0 - tokens) / self.rate * 1000)
            raise ResourceExhausted(f"rate limit for {client!r}: {self.rate:g} requests/s (bursts of "
                                    f"{self.burst}) exceeded; retry in {wait_ms} ms")

    def _forget(self, now: float) -> None:
        """Drop the oldest buckets while they are full again (idle) or there are too many."""
        full_after = self.burst / self.rate
        while self._buckets:
            oldest, (_, at) = next(iter(self._buckets.items()))
            if len(self._buckets) <= self.max_clients and now - at < full_after:
                return
            del self._buckets[oldest]


class StreamSlots:
    """At most ``limit`` streams open at once per client (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    @contextmanager
    def hold(self, client: str, method: str) -> Iterator[None]:
        if self.limit <= 0:
            yield
            return
        with self._lock:
            if self._open.get(client, 0) >= self.limit:
                raise ResourceExhausted(f"{client!r} already has {self.limit} streams open (the most one client "
                                        f"may); wait for one to finish before starting another {method}")
            self._open[client] = self._open.get(client, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._open[client] - 1
                if left:
                    self._open[client] = left
                else:
                    del self._open[client]


def parse_message_limits(text: str) -> dict[str, int]:
    """``"Search=64,Get=4"`` (MiB per request message) → bytes by method name."""
    limits: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        method, sep, value = part.partition("=")
        if not sep or not method.strip():
            raise ValueError(f"message limit {part!r}: write Method=MiB, e.g. Search=64")
        try:
            mib = float(value)
        except ValueError:
            raise ValueError(f"message limit {part!r}: MiB must be a number, e.g. Search=64") from None
        if not 0 < mib <= 4096:  # also refuses nan
            raise ValueError(f"message limit {part!r}: MiB must be in (0, 4096]")
        limits[method.strip()] = int(mib * MIB)
    return limits


def check_message_size(method: str, size: int, limits: Mapping[str, int]) -> None:
    limit = limits.get(method)
    if limit is not None and size > limit:
        raise ResourceExhausted(f"the {method} request message is {size / MIB:.1f} MiB; this service accepts at "
                                f"most {limit / MIB:g} MiB per {method} message")


M = TypeVar("M", bound=Message)


def fitting_thumbnails(reply: M, limit: int = MAX_MESSAGE_BYTES) -> M:
    """``reply`` (hits or items with thumbnails) if it fits one message of ``limit`` bytes.

    A thumbnail may be 256 KiB, so a few hundred hits can pass gRPC's limit: gRPC then fails the call
    after all its work with 'Sent message larger than max', which names neither k nor thumbnails.
    Refused here instead, by what the reply actually holds, so the common small thumbnails are never
    refused for what the largest ones would cost. Shards and gateway both apply it.
    """
    size = reply.ByteSize()
    if size > limit:
        raise ResourceExhausted(
            f"the reply with thumbnails would be {size / MIB:.1f} MiB, over the {limit / MIB:g} MiB message limit "
            f"(a thumbnail may be up to {MAX_THUMBNAIL_BYTES // 1024} KiB); ask for fewer hits or items with "
            f"thumbnails in one call (lower k, queries or ids; about {100 * limit // size}% of them fit), or ask "
            "without thumbnails and Get those of the hits you show")
    return reply
