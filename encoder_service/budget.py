"""Decode memory shared by every request of one encoder process: a semaphore counted in bytes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from orbithash import ResourceExhausted
from orbithash.images import megabytes


class MemoryBudget:
    """``capacity`` bytes of estimated decode memory; each image holds its estimate while it decodes.

    Concurrent requests therefore cannot together decode more than the budget: an image that does
    not fit waits up to its timeout for others to finish, then its request is refused.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a memory budget needs a positive capacity")
        self.capacity = capacity
        self._used = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    def acquire(self, nbytes: int, timeout: float) -> bool:
        """Hold ``nbytes`` once they fit, waiting at most ``timeout`` seconds; False if they never did."""
        if nbytes > self.capacity:
            return False
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while self._used + nbytes > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            self._used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._changed:
            self._used -= nbytes
            self._changed.notify_all()

    @contextmanager
    def reserve(self, nbytes: int, timeout: float, what: str) -> Iterator[None]:
        """Hold ``nbytes`` for the block, or raise ResourceExhausted naming ``what`` and the budget."""
        if not self.acquire(nbytes, timeout):
            raise ResourceExhausted(
                f"{what} needs about {megabytes(nbytes)} to decode, and the encoder's decode memory budget "
                f"of {megabytes(self.capacity)} stayed taken by other requests for {timeout:.1f} s; "
                "retry shortly, or send smaller images")
        try:
            yield
        finally:
            self.release(nbytes)
