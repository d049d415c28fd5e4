"""`orbithash up` supervises its children: a real cluster whose processes are killed as a crash would.

One launcher serves the module (starting it costs ~10-20 s); the tests run in file order and the last
one stops it with `orbithash down`. Restart times are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from orbithash.data import Split
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import STATE_FILE, grpc_serving

CLI = [sys.executable, "-m", "orbithash_local.cli"]
SHM = Path("/dev/shm")
STUB = "triton_python_backend_stub"


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after "pid (comm)": state, ppid, pgrp, … (empty when the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2:].split()


def _alive(pid: int) -> bool:
    """Runs (a zombie waiting to be reaped counts as gone)."""
    stat = _stat(pid)
    return bool(stat) and stat[0] not in "ZX"


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (read here, not through the code under test)."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if _alive(pid) and int(_stat(pid)[2] if _stat(pid) else -1) == pgid]


@dataclass
class Launcher:
    proc: subprocess.Popen
    work: Path
    seen: dict[str, dict] = field(default_factory=dict)  # every service entry ever read, by pid

    def state(self) -> dict:
        state = json.loads((self.work / STATE_FILE).read_text())
        for service in state.get("services", {}).values():
            self.seen[str(service["pid"])] = service
        return state

    def service(self, name: str) -> dict:
        return self.state()["services"][name]

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60) -> tuple[dict, float]:
        """The service's entry once it runs again under a new pid, and the seconds that took."""
        start = time.monotonic()
        while True:
            assert self.proc.poll() is None, "the launcher exited"
            service = self.service(name)
            if service["pid"] != old_pid and service["state"] == "running":
                return service, time.monotonic() - start
            assert time.monotonic() - start < timeout, f"{name} not back after {timeout} s: {service}"
            time.sleep(0.05)

    def metric(self, name: str, service: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.state()['metrics_port']}/metrics", timeout=5).read()
        prefix = f'{name}{{service="{service}"}} '
        line = next(line for line in text.decode().splitlines() if line.startswith(prefix))
        return float(line[len(prefix):])

    def log(self) -> str:
        return Path(self.state()["log"]).read_text()


def stubs_of(pgid: int) -> list[int]:
    """Python-backend stubs in tritonserver's process group."""
    found = []
    for pid in group_members(pgid):
        try:
            if STUB in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(pid)
        except OSError:
            pass
    return found


def _kill_leftovers(launcher: Launcher) -> None:
    """Safety net for a failed test: kill what is left of every child ever seen (same command line only)."""
    for service in launcher.seen.values():
        pid = service["pid"]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            cmdline = []
        if [c.decode(errors="replace") for c in cmdline] == service["argv"] or group_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if service.get("shm_region_prefix"):
            for region in SHM.glob(f"{service['shm_region_prefix']}*"):
                region.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def launcher(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    work = tmp_path_factory.mktemp("supervised")
    with open(work.parent / f"{work.name}-up.out", "w") as out:  # a file: a full pipe would block the launcher
        proc = subprocess.Popen([*CLI, "up", "--work-dir", str(work), "--model-repository", str(trained_repo),
                                 "--shards", "2"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Launcher(proc, work)
    try:
        started = time.monotonic()
        while not (work / STATE_FILE).exists():
            assert proc.poll() is None, "orbithash up exited: see " + out.name
            assert time.monotonic() - started < 180, "cluster did not come up"
            time.sleep(0.2)
        print(f"\ncluster up in {time.monotonic() - started:.1f} s")
        running.state()
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _kill_leftovers(running)


def test_a_killed_shard_is_restarted_on_its_address(launcher: Launcher) -> None:
    before = launcher.state()["services"]
    old = before["shard-1"]
    os.kill(old["pid"], signal.SIGKILL)
    new, took = launcher.wait_restarted("shard-1", old["pid"])
    print(f"\nshard-1 SERVING again {took:.2f} s after SIGKILL")
    assert new["restarts"] == 1 and new["last_exit"]["status"] == "signal SIGKILL"
    assert new["address"] == old["address"] and new["argv"] == old["argv"]
    assert grpc_serving(new["address"])
    untouched = launcher.service("shard-0")
    assert untouched["pid"] == before["shard-0"]["pid"] and untouched["restarts"] == 0
    assert f"shard-1 (pid {old['pid']}) exited with signal SIGKILL" in launcher.log()
    assert launcher.metric("orbithash_launcher_restarts_total", "shard-1") == 1
    assert launcher.metric("orbithash_launcher_restarts_total", "shard-0") == 0
    assert launcher.metric("orbithash_launcher_child_up", "shard-1") == 1
    with grpc.insecure_channel(launcher.state()["endpoints"]["gateway"]) as channel:
        gateway = rpc.GatewayStub(channel)
        deadline = time.monotonic() + 10  # the gateway reconnects to the same address by itself
        while not all(s.healthy for s in gateway.Info(pb.InfoRequest(), timeout=10).shards):
            assert time.monotonic() < deadline, "the gateway did not see the restarted shard"
            time.sleep(0.1)


def test_a_killed_triton_leaves_no_stub_or_shm_region_behind(launcher: Launcher, ucm_subset: Split) -> None:
    old = launcher.service("tritonserver")
    prefix = old["shm_region_prefix"]
    stubs = stubs_of(old["pid"])
    regions = {p.name for p in SHM.glob(f"{prefix}*")}
    assert stubs and regions, "tritonserver should run a Python-backend stub with its own shm region"
    # A stub busy in a long request cannot notice its server died, nor clean up: freeze it, then crash Triton.
    for pid in stubs:
        os.kill(pid, signal.SIGSTOP)
    killed = time.monotonic()
    os.kill(old["pid"], signal.SIGKILL)
    new, took = launcher.wait_restarted("tritonserver", old["pid"])
    print(f"\ntritonserver model-ready again {took:.2f} s after SIGKILL")
    assert new["restarts"] == 1 and new["address"] == old["address"]
    assert not [pid for pid in stubs if _alive(pid)], "the old instance's stubs survived the restart"
    now = {p.name for p in SHM.glob(f"{prefix}*")}
    assert not regions & now, "the old instance's shm regions were not removed"
    assert now and stubs_of(new["pid"]), "the new instance runs its own stub and region"
    assert launcher.metric("orbithash_launcher_restarts_total", "tritonserver") == 1
    image = ucm_subset.queries[0].data
    with grpc.insecure_channel(launcher.state()["endpoints"]["encoder"]) as channel:
        encoder = rpc.EncoderStub(channel)
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = encoder.Encode(pb.EncodeRequest(images=[image]), timeout=10)
                break
            except grpc.RpcError as exc:
                assert time.monotonic() < deadline, f"the encoder does not answer again: {exc}"
                time.sleep(0.2)
    print(f"encoder answers {time.monotonic() - killed:.2f} s after SIGKILL of tritonserver")
    assert len(reply.encodings) == 1 and reply.encodings[0].code


def test_a_killed_redis_comes_back_with_every_acknowledged_write(launcher: Launcher, ucm_subset: Split) -> None:
    records = ucm_subset.queries[:8]
    gateway_address = launcher.state()["endpoints"]["gateway"]
    with grpc.insecure_channel(gateway_address) as channel:
        gateway = rpc.GatewayStub(channel)
        summary = gateway.Ingest(iter(pb.IngestItem(id=r.id, image=r.data, label=r.label) for r in records),
                                 timeout=120)
        assert summary.ingested == len(records)
        total = gateway.Info(pb.InfoRequest(), timeout=10).total
        old = launcher.service("redis-server")
        os.kill(old["pid"], signal.SIGKILL)
        new, took = launcher.wait_restarted("redis-server", old["pid"])
        print(f"\nredis-server answering PING again {took:.2f} s after SIGKILL")
        assert new["address"] == old["address"] and new["data_dir"] == old["data_dir"] and new["restarts"] == 1
        # The shards hold their index in memory: crash them too, so they reload it from the restarted Redis.
        shards = {name: launcher.service(name) for name in ("shard-0", "shard-1")}
        for shard in shards.values():
            os.kill(shard["pid"], signal.SIGKILL)
        for name, shard in shards.items():
            assert launcher.wait_restarted(name, shard["pid"])[0]["restarts"] == shard["restarts"] + 1
        deadline = time.monotonic() + 15
        while True:
            info = gateway.Info(pb.InfoRequest(), timeout=10)
            if all(s.healthy for s in info.shards) and info.total == total:
                break
            assert time.monotonic() < deadline, f"reloaded {info.total} items of {total}"
            time.sleep(0.2)
        hit = gateway.Search(pb.SearchRequest(id=records[-1].id, k=1), timeout=30).hits[0]
        assert hit.id == records[-1].id and hit.distance == 0


def test_down_stops_every_child_and_returns_once_they_are_gone(launcher: Launcher) -> None:
    state = launcher.state()
    services = state["services"]
    gateway = state["endpoints"]["gateway"]
    stubs = stubs_of(services["tritonserver"]["pid"])
    assert stubs
    pids = {name: s["pid"] for name, s in services.items()} | {f"stub {pid}": pid for pid in stubs}
    prefix = services["tritonserver"]["shm_region_prefix"]
    down = subprocess.run([*CLI, "down", "--work-dir", str(launcher.work)], capture_output=True, text=True,
                          timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    # `down` returns once the launcher stopped: nothing is left to wait for
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not list(SHM.glob(f"{prefix}*"))
    assert not (launcher.work / STATE_FILE).exists()
    assert launcher.proc.wait(timeout=5) == 0
    assert not grpc_serving(gateway, timeout=0.5)
    log = (launcher.work / "logs" / "launcher.log").read_text()
    order = [log.index(f"stopping {name} (pid") for name in services]
    assert order == sorted(order, reverse=True), "children are stopped in reverse start order"
    assert "restarting it" not in log.split("stopping gateway")[1], "no restart while shutting down"
