"""When a failed call is sent again: exponential backoff with jitter, on UNAVAILABLE only.

Every call the client makes can be sent again safely: reads change nothing, ingest and metadata
updates replace by id, and deleting an id twice leaves it deleted. Only UNAVAILABLE is retried
(the gateway, or everything behind it, could not be reached); a refused request would be refused
again, and a passed deadline leaves no time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc


@dataclass(frozen=True)
class Retry:
    """``retries`` more attempts after the first, waiting ``backoff_s``, then ``multiplier`` times
    longer each time up to ``max_backoff_s``; each wait is shortened by a random fraction of up to
    ``jitter`` so that many clients do not retry in step. A retry happens only while the call's
    deadline leaves room for the wait. ``sleep`` and ``random`` can be replaced (tests)."""

    retries: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5
    codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("retries, backoff_s and max_backoff_s must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in 0..1")

    @classmethod
    def none(cls) -> Retry:
        """Never retry."""
        return cls(retries=0)

    def retryable(self, code: grpc.StatusCode) -> bool:
        return code in self.codes

    def delays(self) -> Iterator[float]:
        """The wait before each retry, ``retries`` of them."""
        base = self.backoff_s
        for _ in range(self.retries):
            yield min(base, self.max_backoff_s) * (1 - self.jitter * self.random())
            base *= self.multiplier


def as_retry(retries: int | Retry) -> Retry:
    """A :class:`Retry` from a count of retries (default backoff) or as given."""
    if isinstance(retries, Retry):
        return retries
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"retries must be an int or a Retry, got {type(retries).__name__}")
    return Retry(retries=retries)
