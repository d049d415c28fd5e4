"""Child processes that are started, waited on until ready, restarted, and always stopped.

Each child runs in a session (and process group) of its own, so stopping it reaches whatever it
started too (tritonserver's Python-backend stubs). Processes left in that group after the leader
died are found through ``/proc`` and killed before the child is started again.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from orbithash import Unavailable


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from ``/proc``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, … after "pid (comm)"
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            members.append(int(entry.name))
    return members


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGKILL``, as Popen's return code says."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class ManagedProcess:
    """A child process with a log file, a readiness probe and a clean stop (SIGTERM, then KILL).

    ``cleanup`` runs after the process group is gone, on :meth:`stop` and before each :meth:`start`
    (tritonserver removes its shared-memory regions there). The command line, the environment the
    launcher adds and the working directory are kept, so the same process can be started again and
    a person can start it by hand (:meth:`command`).
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, cleanup: Callable[[], None] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = Path(cwd) if cwd else Path.cwd()
        self.cleanup = cleanup
        self.started_at = 0.0  # time.time() of the latest start
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def extra_env(self) -> dict[str, str]:
        """The variables the launcher sets on top of its own environment."""
        return {k: v for k, v in (self.env or {}).items() if os.environ.get(k) != v}

    def command(self) -> str:
        """A shell line that starts this process by hand, as the launcher does."""
        env = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.extra_env.items())]
        return " ".join([f"cd {shlex.quote(str(self.cwd))} &&", *(["env", *env] if env else []),
                         shlex.join(self.argv)])

    def start(self) -> None:
        """Start (again): first whatever the previous instance left in its group goes, and ``cleanup`` runs."""
        if self.proc is not None:
            if self.alive():
                raise RuntimeError(f"{self.name} is still running as pid {self.pid}")
            self._kill_leftovers()
        if self.cleanup is not None:
            self.cleanup()
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop() or the next start()
        self._log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} launcher starts {self.name}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
            start_new_session=True,
        )
        self.started_at = time.time()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, probe: Callable[[], bool], timeout: float, cancel: threading.Event | None = None) -> None:
        """Poll ``probe`` until it says ready; stop the process and raise :class:`Unavailable` if it
        exits, is not ready within ``timeout`` seconds, or ``cancel`` is set."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise Unavailable(f"{self.name} exited with {describe_exit(self.returncode or 0)}; "
                                  f"see {self.log_path}:\n" + self.log_tail())
            if cancel is not None and cancel.is_set():
                self.stop()
                raise Unavailable(f"{self.name}: start cancelled")
            try:
                if probe():
                    return
            except Unavailable:
                self.stop()
                raise
            except Exception:
                pass
            time.sleep(0.1)
        self.stop()
        raise Unavailable(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}:\n" + self.log_tail())

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def leftovers(self) -> list[int]:
        """Live processes still in this child's process group (the child itself included while it runs)."""
        return [] if self.proc is None else group_members(self.proc.pid)

    def _signal_group(self, sig: signal.Signals) -> None:
        # Only while a live member was just seen: the group id cannot be reused while the group exists.
        if self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def _wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.leftovers():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _kill_leftovers(self) -> None:
        self._signal_group(signal.SIGKILL)
        self._wait_group_gone(5.0)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole group, SIGKILL to what is left after ``grace`` seconds, then ``cleanup``."""
        if self.proc is not None:
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
            self._wait_group_gone(max(0.0, deadline - time.monotonic()))
            self._kill_leftovers()
            self.proc.wait()
            if self.cleanup is not None:
                self.cleanup()
        self._close_log()

    def kill(self) -> None:
        """Hard kill of the whole group, as a crash would (tests of recovery); no cleanup."""
        if self.proc is not None:
            self._kill_leftovers()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
