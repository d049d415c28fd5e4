"""Where the CPU goes: milliseconds of CPU per image query, by process of the local cluster.

    .venv/bin/python bench/cpu_per_query.py [--seconds 8] [--concurrency 1 8]

On a machine whose cores are all busy, throughput is CPU per query: this bench starts the local
cluster (redis-server, tritonserver and its Python-backend stub, encoder, two shards, gateway),
ingests 400 UC Merced images, then for each concurrency runs ``orbithash loadtest``'s workers
(search by image, k = 10) for a fixed time and reads every process's user + system CPU time from
/proc before and after. Prints, per concurrency, queries/s and CPU ms per query by process, and a
final JSON line (``qps_c<N>``, ``cpu_ms_per_query_c<N>`` by role, ``total_c<N>``).

Settings reach the services through their environment, so variants compare with one command,
e.g. ``ORBITHASH_GATEWAY_COALESCE_INFLIGHT=0 .venv/bin/python bench/cpu_per_query.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orbithash.data import load_split
from orbithash_cli.loadtest import Plan, run_load
from orbithash_client import Item, OrbitHashClient
from orbithash_local.cluster import Cluster, ClusterConfig

REPO = Path(__file__).resolve().parents[1]
ROLES = (("triton_python_backend_stub", "triton_model"), ("tritonserver", "triton_server"),
         ("encoder_service", "encoder"), ("gateway", "gateway"), ("index_service", "shards"),
         ("redis-server", "redis"))


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (the cluster's children and theirs)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parent[int(entry)] = int(fields[1])
    found, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return "gone"
    if pid == os.getpid():
        return "load generator"
    return next((name for marker, name in ROLES if marker in command), "other")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    args = parser.parse_args(argv)
    split = load_split(None)
    images = [r.data for r in split.queries]
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="orbithash-cpu-") as tmp:
        config = ClusterConfig(model_repository=args.model_repository, work_dir=Path(tmp), shards=2, thumbnail_size=0)
        with Cluster(config) as cluster:
            assert cluster.gateway is not None
            address = cluster.gateway.address
            with OrbitHashClient(address, timeout=300) as client:
                client.ingest([Item(r.id, r.data, label=r.label) for r in split.database[:400]], batch_size=32)
            pids = descendants(os.getpid())
            for c in args.concurrency:
                before = {pid: cpu_seconds(pid) for pid in pids}
                result = run_load(lambda: OrbitHashClient(address, timeout=30, retries=0),
                                  Plan(mix={"search-image": 1}, concurrency=c, duration_s=args.seconds, warmup_s=1.0,
                                       timeout_s=30.0), images)
                done = result.summary["kinds"]["search-image"]["ok"]  # type: ignore[index]
                by_role: dict[str, float] = {}
                for pid in pids:
                    name = role(pid)
                    by_role[name] = by_role.get(name, 0.0) + (cpu_seconds(pid) - before[pid]) * 1e3 / max(done, 1)
                by_role = {k: round(v, 2) for k, v in sorted(by_role.items(), key=lambda kv: -kv[1]) if v >= 0.01}
                qps = done / float(result.summary["elapsed_s"])  # type: ignore[arg-type]
                print(f"concurrency {c}: {qps:.1f} queries/s; CPU ms per query by process")
                for name, ms in by_role.items():
                    print(f"  {name:<16} {ms:7.2f}")
                print(f"  {'total':<16} {sum(by_role.values()):7.2f}")
                out[f"qps_c{c}"] = round(qps, 1)
                out[f"cpu_ms_per_query_c{c}"] = by_role
                out[f"total_c{c}"] = round(sum(by_role.values()), 2)
    out["cpus"] = len(os.sched_getaffinity(0))
    out["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
