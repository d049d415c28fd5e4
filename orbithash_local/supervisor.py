"""Supervision of the launcher's children: notice an exit, log it, start the child again.

One watcher thread per child polls its process. When the child exits (while the launcher is not
stopping) the watcher logs the name, pid and exit status, waits out an exponential backoff, starts
the same command line again (same ports, same data directory) and waits until the child is ready.
A child that keeps dying is given up after :attr:`Backoff.give_up_after` restarts in a row that did
not stay up :attr:`Backoff.stable_s`. Every change is reported through ``on_change`` (the cluster
rewrites its state file) and in Prometheus metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from orbithash import Unavailable
from orbithash_local.processes import ManagedProcess, describe_exit

log = logging.getLogger("orbithash.supervisor")

RUNNING, RESTARTING, GIVEN_UP, STOPPED = "running", "restarting", "given up", "stopped"


class Child(Protocol):
    """What the supervisor needs of a child: its process, a readiness probe, and where it listens."""

    name: str
    process: ManagedProcess

    @property
    def address(self) -> str: ...

    def ready(self) -> bool: ...


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number n of a run of failures: ``initial_s · 2ⁿ⁻¹``, at most ``cap_s``."""

    initial_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0  # a child up this long starts the next run of failures from initial_s
    give_up_after: int = 10  # restarts in a row that did not stay up stable_s

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.initial_s * 2 ** max(0, failures - 1))


@dataclass
class ChildStatus:
    state: str = RUNNING
    restarts: int = 0
    failures_in_row: int = 0
    last_exit: str | None = None  # "signal SIGKILL", "exit code 1"
    last_exit_code: int | None = None  # Popen's return code: negative for a signal
    last_exit_at: float | None = None  # time.time()

    def as_dict(self) -> dict[str, object]:
        at = None if self.last_exit_at is None else time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                                  time.localtime(self.last_exit_at))
        return {"state": self.state, "restarts": self.restarts,
                "last_exit": None if self.last_exit is None else
                {"status": self.last_exit, "returncode": self.last_exit_code, "at": at, "at_unix": self.last_exit_at}}


class LauncherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.restarts = Counter("orbithash_launcher_restarts", "Times the launcher started a child again after it "
                                "exited", ["service"], registry=registry)
        self.up = Gauge("orbithash_launcher_child_up", "1 while the child runs and passed its readiness probe",
                        ["service"], registry=registry)
        self.start_time = Gauge("orbithash_launcher_child_start_time_seconds", "Unix time the child was last "
                                "started", ["service"], registry=registry)
        self.exits = Counter("orbithash_launcher_child_exits", "Exits of a child the launcher did not ask for",
                             ["service"], registry=registry)


class Supervisor:
    """Watches ``children`` from :meth:`start` until :meth:`stop`; never restarts once stopping."""

    def __init__(self, children: list[Child], registry: CollectorRegistry, backoff: Backoff | None = None,
                 startup_timeout_s: float = 180.0, on_change: Callable[[], None] = lambda: None,
                 poll_s: float = 0.2) -> None:
        self.children = {child.name: child for child in children}
        self.backoff = backoff or Backoff()
        self.startup_timeout_s = startup_timeout_s
        self.on_change = on_change
        self.poll_s = poll_s
        self.metrics = LauncherMetrics(registry)
        self.status = {name: ChildStatus() for name in self.children}
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # held while a child is spawned, so stop() never races a start
        self._threads: list[threading.Thread] = []
        for child in children:
            self.metrics.restarts.labels(child.name)
            self.metrics.exits.labels(child.name)
            self.metrics.up.labels(child.name).set(1 if child.process.alive() else 0)
            self.metrics.start_time.labels(child.name).set(child.process.started_at)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        for name in self.children:
            thread = threading.Thread(target=self._watch_safely, args=(name,), name=f"supervise-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """No restart after this returns; a start in progress is cancelled (its process stopped)."""
        with self._lock:
            self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for name, status in self.status.items():
            if status.state != GIVEN_UP:
                status.state = STOPPED
            self.metrics.up.labels(name).set(0)

    def _watch_safely(self, name: str) -> None:
        try:
            self._watch(name)
        except Exception:
            log.exception("supervisor of %s failed; %s is no longer supervised", name, name)

    def _watch(self, name: str) -> None:
        child, status = self.children[name], self.status[name]
        while not self._stopping.wait(self.poll_s):
            process = child.process
            if process.alive():
                continue
            if self._stopping.is_set():
                return
            returncode = process.returncode or 0
            now = time.time()
            up_for = now - process.started_at
            status.failures_in_row = 1 if up_for >= self.backoff.stable_s else status.failures_in_row + 1
            status.last_exit, status.last_exit_code, status.last_exit_at = describe_exit(returncode), returncode, now
            self.metrics.exits.labels(name).inc()
            self.metrics.up.labels(name).set(0)
            if status.failures_in_row > self.backoff.give_up_after:
                status.state = GIVEN_UP
                log.error("%s (pid %d) exited with %s after %.1f s up; given up after %d restarts in a row "
                          "(see %s)", name, process.pid, status.last_exit, up_for, status.failures_in_row - 1,
                          process.log_path)
                self.on_change()
                return
            delay = self.backoff.delay(status.failures_in_row)
            status.state = RESTARTING
            log.warning("%s (pid %d) exited with %s after %.1f s up; restarting it in %.1f s on %s (see %s)",
                        name, process.pid, status.last_exit, up_for, delay, child.address, process.log_path)
            self.on_change()
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                old_pid = process.pid
                process.start()
                status.restarts += 1
            self.metrics.restarts.labels(name).inc()
            self.metrics.start_time.labels(name).set(process.started_at)
            self.on_change()
            try:
                process.wait_ready(child.ready, self.startup_timeout_s, cancel=self._stopping)
            except Unavailable as exc:
                if self._stopping.is_set():
                    return
                log.warning("restart %d of %s failed: %s", status.restarts, name, str(exc).splitlines()[0])
                continue  # the process is gone: the next turn counts it as a failure
            status.state = RUNNING
            self.metrics.up.labels(name).set(1)
            log.info("%s is back on %s as pid %d (was %d), ready %.1f s after it exited; restarts %d",
                     name, child.address, process.pid, old_pid, time.time() - now, status.restarts)
            self.on_change()
