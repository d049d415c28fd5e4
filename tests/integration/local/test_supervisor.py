"""The supervisor and the process groups on small real processes (seconds, no cluster)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from orbithash_local.processes import ManagedProcess, group_members
from orbithash_local.supervisor import GIVEN_UP, RUNNING, STOPPED, Backoff, Supervisor


class Child:
    """A child as the supervisor sees it: a process, an address and a readiness probe."""

    address = "127.0.0.1:0"

    def __init__(self, name: str, code: str, log_dir: Path) -> None:
        self.name = name
        self.process = ManagedProcess(name, [sys.executable, "-c", code], log_dir / f"{name}.log")

    def ready(self) -> bool:
        return True


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def sample(registry: CollectorRegistry, name: str, service: str) -> float | None:
    return registry.get_sample_value(name, {"service": service})


def test_backoff_doubles_from_half_a_second_to_thirty() -> None:
    assert [Backoff().delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_an_exited_child_is_restarted_logged_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    child = Child("sleeper", "import time; time.sleep(60)", tmp_path)
    registry = CollectorRegistry()
    changes = []
    supervisor = Supervisor([child], registry, Backoff(initial_s=0.05), on_change=lambda: changes.append(1))
    supervisor.start()
    old = child.process.pid
    try:
        with caplog.at_level(logging.INFO, logger="orbithash.supervisor"):
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: child.process.pid != old and supervisor.status["sleeper"].state == RUNNING)
        status = supervisor.status["sleeper"]
        assert status.restarts == 1 and status.last_exit == "signal SIGKILL" and status.last_exit_code == -9
        assert f"sleeper (pid {old}) exited with signal SIGKILL" in caplog.text
        assert sample(registry, "orbithash_launcher_restarts_total", "sleeper") == 1
        assert sample(registry, "orbithash_launcher_child_up", "sleeper") == 1
        assert changes, "the state file is rewritten on every change"
    finally:
        supervisor.stop()
        child.process.stop()


def test_no_restart_once_stopping(tmp_path: Path) -> None:
    child = Child("sleeper", "import time; time.sleep(60)", tmp_path)
    supervisor = Supervisor([child], CollectorRegistry(), Backoff(initial_s=0.01))
    supervisor.start()
    supervisor.stop()
    pid = child.process.pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert child.process.pid == pid and not child.process.alive()
    assert supervisor.status["sleeper"].state == STOPPED and supervisor.status["sleeper"].restarts == 0
    child.process.stop()


def test_a_child_that_keeps_failing_is_given_up_with_growing_delays(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    child = Child("crasher", "import sys; sys.exit(3)", tmp_path)
    registry = CollectorRegistry()
    starts = [time.monotonic()]
    supervisor = Supervisor([child], registry, Backoff(initial_s=0.1, give_up_after=3), poll_s=0.01,
                            on_change=lambda: starts.append(time.monotonic()))
    with caplog.at_level(logging.INFO, logger="orbithash.supervisor"):
        supervisor.start()
        wait_for(lambda: supervisor.status["crasher"].state == GIVEN_UP)
    supervisor.stop()
    status = supervisor.status["crasher"]
    assert status.restarts == 3 and status.last_exit == "exit code 3"
    assert status.state == GIVEN_UP  # stop() keeps it
    assert sample(registry, "orbithash_launcher_restarts_total", "crasher") == 3
    assert sample(registry, "orbithash_launcher_child_exits_total", "crasher") == 4
    assert sample(registry, "orbithash_launcher_child_up", "crasher") == 0
    assert "given up after 3 restarts in a row" in caplog.text
    assert [r for r in caplog.records if "restarting it in" in r.message][-1].message.count("in 0.4 s")


def test_start_kills_what_the_previous_instance_left_in_its_group(tmp_path: Path) -> None:
    # sh starts a grandchild in its group, as tritonserver starts its Python-backend stubs
    process = ManagedProcess("parent", ["sh", "-c", "sleep 60 & wait"], tmp_path / "parent.log")
    try:
        wait_for(lambda: len(group_members(process.pid)) == 2)
        old_group = process.pid
        os.kill(process.pid, signal.SIGKILL)  # the leader dies alone: its child stays behind
        process.proc.wait()
        (leftover,) = group_members(old_group)
        process.start()
        assert not group_members(old_group), f"pid {leftover} of the old group survived the restart"
        assert process.alive() and process.pid != old_group
    finally:
        process.stop()
    assert not group_members(process.pid)


def test_stop_kills_the_group_even_when_its_leader_is_gone(tmp_path: Path) -> None:
    cleaned = []
    process = ManagedProcess("parent", ["sh", "-c", "sleep 60 & wait"], tmp_path / "parent.log",
                             cleanup=lambda: cleaned.append(1))
    wait_for(lambda: len(group_members(process.pid)) == 2)
    os.kill(process.pid, signal.SIGKILL)
    process.proc.wait()
    assert group_members(process.pid)
    process.stop(grace=2)
    assert not group_members(process.pid)
    assert cleaned == [1, 1]  # before the start, and after the stop


def test_the_command_line_starts_the_process_by_hand(tmp_path: Path) -> None:
    process = ManagedProcess("env", [sys.executable, "-c", "import os; print(os.environ['ORBITHASH_X'])"],
                             tmp_path / "env.log", env=dict(os.environ, ORBITHASH_X="a b"), cwd=tmp_path)
    process.proc.wait()
    assert process.extra_env == {"ORBITHASH_X": "a b"}
    assert process.command().startswith(f"cd {tmp_path} && env ORBITHASH_X='a b' ")
    assert subprocess.run(process.command(), shell=True, capture_output=True, text=True).stdout == "a b\n"
    process.stop()
