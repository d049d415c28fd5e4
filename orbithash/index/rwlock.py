"""A read-write lock: searches share the index, a write has it alone.

Every search takes it, so on a small shard its cost is part of the latency: the guards are plain
objects with ``__enter__``/``__exit__`` (a ``@contextmanager`` generator costs a few microseconds
more per use) over a ``Condition`` on a non-reentrant lock, waiting only when it must.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Guard:
    """``with lock.read():`` / ``with lock.write():``: stateless, so one instance serves every thread."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None]) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc: object) -> None:
        self._release()


class ReadWriteLock:
    """Many concurrent searches, one exclusive writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._read = _Guard(self._acquire_read, self._release_read)
        self._write = _Guard(self._acquire_write, self._release_write)

    def read(self) -> _Guard:
        return self._read

    def write(self) -> _Guard:
        return self._write

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0 and self._writer:  # only a writer waits for the readers to leave
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True  # from here new readers wait
            while self._readers:
                self._cond.wait()

    def _release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()
