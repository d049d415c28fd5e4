"""End-to-end latency and throughput against concurrency: search by image through the gateway.

    .venv/bin/python bench/latency_concurrency.py [--quick]      # starts the local cluster
    .venv/bin/python bench/latency_concurrency.py --target HOST:PORT --concurrency 1 4 16

Without ``--target`` it starts the local cluster (redis-server, tritonserver, encoder, two shards,
gateway) with the model in ``model_repository/`` and ingests the UC Merced database through the
gateway (all 1,680 images; 420 with ``--quick``). With ``--target`` it measures that gateway as it
is and stores nothing. At each concurrency ``orbithash loadtest``'s closed-loop workers (one client
per thread, in this process) search by image (k = 10, the UC Merced query images) for a fixed time
after a warm-up. In the local mode it also measures plain ONNX Runtime on the same model
(decode + resize + run at batch 32, ``bench/end_to_end.py``'s reference, before the cluster
starts) and draws it on the queries/s panel. Prints a table (queries/s, p50 / p90 / p99 ms, errors), draws
``docs/figures/e2e_latency_concurrency.png`` (latency percentiles and queries/s against
concurrency) and ends with one JSON line (``rows``: one object per concurrency).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write the PNG only
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort
from end_to_end import ingest, reference_rate
from index_growth import machine

from orbithash.data import load_split
from orbithash.export.onnx_facts import exported_facts
from orbithash.export.repository import DEFAULT_MODEL_NAME, model_path
from orbithash_cli.loadtest import Plan, run_load
from orbithash_client import OrbitHashClient
from orbithash_local.cluster import Cluster, ClusterConfig

REPO = Path(__file__).resolve().parents[1]
FIGURE = REPO / "docs" / "figures" / "e2e_latency_concurrency.png"
PERCENTILES = ("p50_ms", "p90_ms", "p99_ms")


def measure(address: str, levels: Sequence[int], seconds: float, warmup_s: float, images: list[bytes]) -> list[dict]:
    """One row per concurrency: queries/s over the measured seconds, latency percentiles, errors."""
    rows = []
    for c in levels:
        result = run_load(lambda: OrbitHashClient(address, timeout=30, retries=0),
                          Plan(mix={"search-image": 1}, concurrency=c, duration_s=seconds, warmup_s=warmup_s,
                               timeout_s=30.0), images)
        kind = result.summary["kinds"]["search-image"]  # type: ignore[index]
        row = {"concurrency": c, "qps": round(kind["ok"] / float(result.summary["elapsed_s"]), 1),  # type: ignore[arg-type]
               "ok": kind["ok"], "errors": kind["errors"], **{p: kind[p] for p in PERCENTILES}}
        rows.append(row)
        print(f"  {c:>11} {row['qps']:>9.1f} {row['p50_ms']:>8} {row['p90_ms']:>8} {row['p99_ms']:>8}  "
              f"{row['errors'] or '-'}", flush=True)
    return rows


def plot(rows: list[dict], title: str, path: Path, reference_img_s: float | None = None) -> None:
    """Two panels over concurrency (log 2): latency percentiles of the successful queries, and queries/s
    (with plain ONNX Runtime's img/s as a dashed line when measured)."""
    levels = [r["concurrency"] for r in rows]
    fig, (lat, qps) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    for key, marker in zip(PERCENTILES, ("o", "s", "^"), strict=True):
        lat.plot(levels, [r[key] for r in rows], marker=marker, label=key.removesuffix("_ms"))
    lat.set_ylabel("latency per query (ms)")
    lat.set_ylim(bottom=0)
    lat.legend()
    qps.plot(levels, [r["qps"] for r in rows], marker="o", color="tab:green", label="through the gateway")
    if reference_img_s is not None:
        qps.axhline(reference_img_s, linestyle="--", color="grey",
                    label=f"plain ONNX Runtime, batch 32: {reference_img_s:.0f} img/s")
        qps.legend(loc="lower right")
    qps.set_ylabel("queries/s")
    qps.set_ylim(bottom=0)
    for ax in (lat, qps):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="concurrency 1 2 4 8, 5 s each, 420 images stored")
    parser.add_argument("--target", help="measure this running gateway (HOST:PORT) instead of a local cluster")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="levels (default 1 2 4 8 16 32)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per level (default 15; 5 quick)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of the same load first, not recorded")
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    parser.add_argument("--out", type=Path, default=FIGURE, help="where the PNG goes")
    args = parser.parse_args(argv)
    levels = args.concurrency or ([1, 2, 4, 8] if args.quick else [1, 2, 4, 8, 16, 32])
    if min(levels) < 1:
        parser.error("--concurrency levels must be at least 1")
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    split = load_split(None)
    images = [r.data for r in split.queries]
    reference = None
    header = f"  {'concurrency':>11} {'queries/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  errors"
    if args.target:
        print(f"gateway {args.target}, search by image, k = 10, {seconds:g} s per level\n{header}")
        rows = measure(args.target, levels, seconds, args.warmup, images)
        where = f"gateway {args.target}"
    else:
        database = split.database[::4] if args.quick else split.database
        path = model_path(args.model_repository, DEFAULT_MODEL_NAME)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        reference = reference_rate(session, exported_facts(args.model_repository), [r.data for r in database[:256]])
        del session
        print(f"plain ONNX Runtime, batch 32: {reference:.1f} img/s")
        with tempfile.TemporaryDirectory(prefix="orbithash-latency-") as tmp:
            config = ClusterConfig(model_repository=args.model_repository, work_dir=Path(tmp), shards=2,
                                   thumbnail_size=0)
            with Cluster(config) as cluster:
                assert cluster.gateway is not None
                rate, stored = ingest(cluster.gateway.address, database, 4)
                print(f"stored {stored} UC Merced images ({rate:.1f} img/s); search by image, k = 10, "
                      f"{seconds:g} s per level\n{header}")
                rows = measure(cluster.gateway.address, levels, seconds, args.warmup, images)
        where = f"local cluster, 2 shards, {stored} items"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    plot(rows, f"Search by image through the gateway ({where}), k = 10\n{machine()}, commit {commit}", args.out,
         reference)
    print(f"wrote {args.out}")
    print(json.dumps({"rows": rows, "onnxruntime_batch32_img_s": None if reference is None else round(reference, 1),
                      "seconds": seconds, "target": args.target, "commit": commit,
                      "cpus": len(os.sched_getaffinity(0)), "load_avg": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
