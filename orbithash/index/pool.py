"""The process-wide threads one search call splits its work over (scan and MIH probes alike)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def shared_pool() -> Executor:
    """One process-wide pool: the kernels release the GIL, so threads give real parallelism."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(cpu_count(), 2), thread_name_prefix="hamming")
        return _pool


def run_split(fn: Callable[..., T], jobs: Sequence[tuple]) -> list[T]:
    """``fn(*job)`` for every job, in order: the first in the calling thread, the rest on the pool.

    The caller works too instead of waiting idle, so a split over t threads takes t - 1 pool threads.
    """
    if len(jobs) == 1:  # the common case of a small search: no pool at all
        return [fn(*jobs[0])]
    futures = [shared_pool().submit(fn, *job) for job in jobs[1:]]
    return [fn(*jobs[0])] + [f.result() for f in futures]
