"""`orbithash up --host`: the gateway binds the address asked for, the rest stays on loopback, and
serving beyond loopback without TLS and tokens is warned about, on the terminal and in the log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from support import REPO

from orbithash_client import OrbitHashClient
from orbithash_local.cluster import STATE_FILE

CLI = [sys.executable, "-m", "orbithash_local.cli"]


def listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp and tcp6 write them) of sockets listening on ``port``."""
    out = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        for line in (path.read_text().splitlines()[1:] if path.exists() else []):
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                out.add(address)
    return out


ANY = {"00000000", "0" * 32}  # 0.0.0.0, or [::] (gRPC binds the wildcard dual-stack where it can)
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, or ::ffff:127.0.0.1


def test_up_host_binds_the_gateway_there_and_warns(trained_repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "cluster"
    proc = subprocess.Popen([*CLI, "up", "--work-dir", str(work), "--model-repository", str(trained_repo),
                             "--shards", "1", "--embedded", "--host", "0.0.0.0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (work / STATE_FILE).exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.2)
        endpoints = json.loads((work / STATE_FILE).read_text())["endpoints"]
        port = int(endpoints["gateway"].rsplit(":", 1)[1])
        assert endpoints["gateway"] == f"127.0.0.1:{port}"  # where this machine reaches it
        assert endpoints["gateway_bind"] == f"0.0.0.0:{port}"
        assert listening(port) and listening(port) <= ANY
        for other in [endpoints["encoder"], *endpoints["shards"]]:
            bound = listening(int(other.rsplit(":", 1)[1]))
            assert bound and bound <= LOOPBACK
        with OrbitHashClient(endpoints["gateway"], timeout=30) as client:
            assert client.info().model.bits > 0
        deadline = time.monotonic() + 30
        log = work / "logs" / "launcher.log"
        while "WITHOUT TLS" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the warning is not in the launcher's log"
            time.sleep(0.2)
        down = subprocess.run([*CLI, "down", "--work-dir", str(work)], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        out, err = proc.communicate(timeout=60)
        assert "WARNING: the gateway listens on every interface" in err and "WITHOUT client tokens" in err
        assert "NO TLS, NO TOKENS" in out and f"gateway on 0.0.0.0:{port}" in out
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
