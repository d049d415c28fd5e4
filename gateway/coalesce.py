"""Concurrent requests joined into one downstream call: "natural batching".

A call goes out at once when fewer than ``max_inflight`` batches are in flight; calls that arrive
meanwhile queue, and when a batch returns the queued ones leave together as the next batch. So a
lone request waits for nothing, and under load each downstream call carries many requests: the
per-call cost of Python gRPC (both sides) is paid once per batch, and Triton's dynamic batcher
gets whole batches instead of single images.

Only calls with equal keys join (same k and filter for a shard search, same thumbnail size for
the encoder). A batch that fails because of its content (an undecodable image, a code of the wrong
length) is sent again request by request, so each caller gets the answer its own request earns;
a batch that fails because the service is down fails every caller in it alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Histogram

from gateway.core import (
    DeleteResult,
    Encoder,
    Encoding,
    MetadataUpdate,
    Shard,
    ShardHits,
    ShardQuery,
    ShardStats,
    StoredItem,
    UpdateResult,
    Written,
)
from orbithash import DeadlineExceeded, Unavailable
from orbithash.model_facts import ModelFacts

I = TypeVar("I")  # noqa: E741  one item of a request (an image, a query code)
R = TypeVar("R")  # its answer

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


@dataclass(eq=False)
class _Waiter(Generic[I, R]):
    items: Sequence[I]
    key: object  # compared with ==, never hashed (a filter holds a dict)
    deadline: float
    weight: int
    done: threading.Event = field(default_factory=threading.Event)
    results: list[R] | None = None
    error: BaseException | None = None
    alone: bool = False  # the batch failed on its content: send this request by itself
    batch: list[_Waiter[I, R]] | None = None  # handed to this waiter's thread to send (it has the latest deadline)
    gone: bool = False  # its caller stopped waiting


class Coalescer(Generic[I, R]):
    """``call(items, timeout, key)`` answers like ``send(items, timeout, key)``, joined with others.

    ``send`` answers one result per item, in order. A batch holds at most ``max_items`` items and
    ``max_weight`` of ``weight(item)`` (a request larger than that goes alone).
    """

    def __init__(self, send: Callable[[list[I], float, object], list[R]], *, name: str, max_items: int,
                 max_inflight: int = 2, max_weight: int | None = None, weight: Callable[[I], int] | None = None,
                 observe: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if max_inflight < 1 or max_items < 1:
            raise ValueError("max_inflight and max_items must be at least 1")
        self._send = send
        self._name = name
        self._max_items = max_items
        self._max_inflight = max_inflight
        self._max_weight = max_weight
        self._weight = weight
        self._observe = observe
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: list[_Waiter[I, R]] = []
        self._inflight = 0

    def call(self, items: Sequence[I], timeout: float, key: object = None) -> list[R]:
        weight = sum(map(self._weight, items)) if self._weight is not None else 0
        waiter: _Waiter[I, R] = _Waiter(items, key, self._clock() + timeout, weight)
        with self._lock:
            self._queue.append(waiter)
            if self._inflight < self._max_inflight:
                self._hand(self._next_batch())
        while not waiter.done.is_set() or waiter.batch is not None:
            if waiter.batch is not None:  # a batch was handed to this thread
                batch, waiter.batch = waiter.batch, None
                self._run(batch)
                continue
            if not waiter.done.wait(max(0.0, waiter.deadline - self._clock())) and not self._give_up(waiter):
                continue  # it was taken into a batch just now: that batch answers it
            if waiter.gone:
                raise DeadlineExceeded(f"{self._name}: no answer within {timeout:.3g} s")
        if waiter.alone:
            return self._send(list(items), max(0.0, waiter.deadline - self._clock()), key)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.results is not None
        return waiter.results

    def _give_up(self, waiter: _Waiter[I, R]) -> bool:
        """Past its deadline: leave the queue, or stop waiting for the batch it is in."""
        with self._lock:
            if waiter.done.is_set() or waiter.batch is not None:
                return False
            if waiter in self._queue:
                self._queue.remove(waiter)
            waiter.gone = True
            waiter.done.set()
            return True

    def _next_batch(self) -> list[_Waiter[I, R]] | None:
        """The queue's head and every later waiter with its key that fits (caller holds the lock)."""
        if not self._queue:
            return None
        head = self._queue[0]
        batch, rest = [head], []
        items, weight = len(head.items), head.weight
        for w in self._queue[1:]:
            fits = items + len(w.items) <= self._max_items and (
                self._max_weight is None or weight + w.weight <= self._max_weight)
            if w.key == head.key and fits:
                batch.append(w)
                items += len(w.items)
                weight += w.weight
            else:
                rest.append(w)
        self._queue = rest
        self._inflight += 1
        return batch

    @staticmethod
    def _hand(batch: list[_Waiter[I, R]] | None) -> None:
        """Give a new batch to the thread of its waiter with the latest deadline (caller holds the lock).

        The batch is sent with that deadline, so any other thread sending it would be held past its
        own caller's; the others stop waiting at theirs. Queued waiters are never gone: giving up
        leaves the queue.
        """
        if batch is not None:
            runner = max(batch, key=lambda w: w.deadline)
            runner.batch = batch
            runner.done.set()

    def _run(self, batch: list[_Waiter[I, R]]) -> None:
        """Send one batch, answer its waiters, then hand on the next batch."""
        try:
            self._deliver(batch)
        finally:
            with self._lock:
                self._inflight -= 1
                following = self._next_batch()
                for w in batch:
                    w.done.set()
                self._hand(following)

    def _deliver(self, batch: list[_Waiter[I, R]]) -> None:
        live = [w for w in batch if not w.gone]
        if not live:
            return
        items = [item for w in live for item in w.items]
        if self._observe is not None:
            self._observe(len(live))
        timeout = max(w.deadline for w in live) - self._clock()
        try:
            results = self._send(items, max(0.0, timeout), live[0].key)
        except Exception as exc:
            if len(live) > 1 and not isinstance(exc, Unavailable):
                for w in live:
                    w.alone = True  # its content, not the service: each request again by itself
            else:
                for w in live:
                    w.error = exc
            return
        if len(results) != len(items):
            error = Unavailable(f"{self._name}: {len(results)} answers for {len(items)} requests")
            for w in live:
                w.error = error
            return
        start = 0
        for w in live:
            w.results = list(results[start:start + len(w.items)])
            start += len(w.items)


def batch_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("orbithash_gateway_coalesced_requests", "Requests joined into one downstream call.",
                     ("target",), buckets=BATCH_BUCKETS, registry=registry)


class CoalescingEncoder:
    """An :class:`~gateway.core.Encoder` whose concurrent ``encode`` calls share encoder calls."""

    def __init__(self, encoder: Encoder, *, max_images: int, max_bytes: int, max_inflight: int,
                 histogram: Histogram | None = None) -> None:
        self._encoder = encoder
        self.address = getattr(encoder, "address", "")
        observe = histogram.labels("encoder").observe if histogram is not None else None
        self._coalescer: Coalescer[bytes, Encoding] = Coalescer(
            self._send, name=f"encoder at {self.address}", max_items=max_images, max_inflight=max_inflight,
            max_weight=max_bytes, weight=len, observe=observe)

    def _send(self, images: list[bytes], timeout: float, thumbnail_size: object) -> list[Encoding]:
        return self._encoder.encode(images, timeout, int(thumbnail_size))  # type: ignore[call-overload]

    def encode(self, images: Sequence[bytes], timeout: float, thumbnail_size: int = 0) -> list[Encoding]:
        return self._coalescer.call(images, timeout, thumbnail_size)

    def model(self, timeout: float) -> ModelFacts:
        return self._encoder.model(timeout)

    def close(self) -> None:
        close = getattr(self._encoder, "close", None)
        if close is not None:
            close()


class CoalescingShard:
    """A :class:`~gateway.core.Shard` whose concurrent searches share one call when they ask alike
    (same k, radius, label, filter); re-ranked searches, which carry floats per code, go alone."""

    def __init__(self, shard: Shard, number: int, *, max_codes: int, max_inflight: int,
                 histogram: Histogram | None = None) -> None:
        self._shard = shard
        observe = histogram.labels("shard").observe if histogram is not None else None
        self._coalescer: Coalescer[bytes, ShardHits] = Coalescer(
            self._send, name=f"index shard {number} at {shard.address}", max_items=max_codes,
            max_inflight=max_inflight, observe=observe)

    @property
    def address(self) -> str:
        return self._shard.address

    def _send(self, codes: list[bytes], timeout: float, key: object) -> list[ShardHits]:
        assert isinstance(key, ShardQuery)
        return list(self._shard.search(replace(key, codes=tuple(codes)), timeout))

    def search(self, query: ShardQuery, timeout: float) -> list[ShardHits]:
        if query.u:
            return self._shard.search(query, timeout)
        return self._coalescer.call(query.codes, timeout, replace(query, codes=()))

    def get(self, ids: Sequence[str], timeout: float, with_metadata: bool = False,
            with_thumbnails: bool = False) -> list[StoredItem]:
        return self._shard.get(ids, timeout, with_metadata, with_thumbnails)

    def add(self, items: Sequence[StoredItem], bits: int, model_version: str, timeout: float) -> Written:
        return self._shard.add(items, bits, model_version, timeout)

    def delete(self, ids: Sequence[str], timeout: float) -> DeleteResult:
        return self._shard.delete(ids, timeout)

    def update_metadata(self, updates: Sequence[MetadataUpdate], timeout: float) -> UpdateResult:
        return self._shard.update_metadata(updates, timeout)

    def stats(self, timeout: float) -> ShardStats:
        return self._shard.stats(timeout)

    def close(self) -> None:
        close = getattr(self._shard, "close", None)
        if close is not None:
            close()
