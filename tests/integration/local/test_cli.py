"""`orbithash up` / `orbithash down` as a user runs them: real processes, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import STATE_FILE, grpc_serving

CLI = [sys.executable, "-m", "orbithash_local.cli"]


def _wait_for_state(work: Path, proc: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while not (work / STATE_FILE).exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "orbithash up exited"
        assert time.monotonic() < deadline, "cluster did not come up"
        time.sleep(0.2)
    return json.loads((work / STATE_FILE).read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_up_serves_and_down_stops_every_child(trained_repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "cluster"
    proc = subprocess.Popen([*CLI, "up", "--work-dir", str(work), "--model-repository", str(trained_repo),
                             "--shards", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        state = _wait_for_state(work, proc)
        endpoints, children_pids = state["endpoints"], state["children"]
        assert set(children_pids) == {"redis-server", "tritonserver", "encoder", "shard-0", "shard-1", "gateway"}
        assert all(_alive(pid) for pid in children_pids.values())
        gateway = endpoints["gateway"]
        assert grpc_serving(gateway)
        with grpc.insecure_channel(gateway) as channel:
            info = rpc.GatewayStub(channel).Info(pb.InfoRequest(), timeout=10)
        assert len(info.shards) == 2 and all(s.healthy for s in info.shards)
        children = [endpoints["encoder"], *endpoints["shards"]]
        assert all(grpc_serving(a) for a in children)

        down = subprocess.run([*CLI, "down", "--work-dir", str(work)], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert proc.wait(timeout=60) == 0
        assert not any(grpc_serving(a, timeout=0.5) for a in [gateway, *children])
        assert not (work / STATE_FILE).exists()
        assert not [n for n, pid in children_pids.items() if _alive(pid)]  # nothing left behind
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_down_without_a_cluster_says_so(tmp_path: Path) -> None:
    down = subprocess.run([*CLI, "down", "--work-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "no running cluster" in down.stdout
