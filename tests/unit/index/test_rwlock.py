"""The index's read-write lock: concurrent readers, an exclusive writer that is never starved."""

from __future__ import annotations

import threading
import time

from orbithash.index.rwlock import ReadWriteLock


def test_waiting_writer_holds_back_new_readers() -> None:
    """Searches never starve a put: once a writer waits, later readers queue behind it."""
    lock = ReadWriteLock()
    order: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def first_reader() -> None:
        with lock.read():
            inside.set()
            release.wait(5)
            order.append("r1")

    def writer() -> None:
        with lock.write():
            order.append("w")

    def late_reader() -> None:
        with lock.read():
            order.append("r2")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    assert inside.wait(5)
    for target in (writer, late_reader):
        threads.append(threading.Thread(target=target))
        threads[-1].start()
        time.sleep(0.1)
    assert order == []  # the writer waits for r1; r2 waits for the writer
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["r1", "w", "r2"]
