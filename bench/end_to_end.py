"""End to end: what a client of the gateway gets, against plain ONNX Runtime in the same run.

    .venv/bin/python bench/end_to_end.py --quick      # ≈ 3 min (the CI version)
    .venv/bin/python bench/end_to_end.py              # more samples, every query for the mAP

Starts the local cluster as ``orbithash up`` does (redis-server, tritonserver, encoder, two shards,
gateway; the exported model in model_repository/), ingests the UC Merced database through the
gateway with the Python client, then measures:

  e2e_p50_ms / e2e_p99_ms   search by image, concurrency 1 (targets ≤ 10 / ≤ 20 ms)
  e2e_throughput_ratio      image queries/s at concurrency 8 (``orbithash loadtest``'s workers)
                            ÷ plain ONNX Runtime img/s at batch 32 (target ≥ 0.8)
  ingest_ratio              ingest img/s through the gateway ÷ the same reference (target ≥ 0.9)
  ucm_map_served            UC Merced mAP of the served model through the gateway (every database
                            item ranked; a subset of the queries with --quick)

The reference is decode + resize + ``session.run`` in this process, batch 32, as in
bench/encoder_throughput.py, run before and after the cluster's load (the mean is used; both are
printed).

Then, unless ``--skip-components``, the rest of the issue's table from the benches that own each
figure, run here one after the other (≈ 4 more minutes):

  shard_bytes_per_item      in-memory index of 1M x 64-bit codes (bench/index_search.py memory)
  redis_bytes_per_item      Redis used_memory per item, 1M items (bench/redis_memory.py)
  rpc_p50_ms                IndexShard.Search over loopback, k=100 (bench/index_search.py rpc;
                            1M items, 100k with --quick)
  shard_concurrency_speedup queries/s at concurrency 4 / 1 on one shard (bench/shard_concurrency.py, 100k)
  rpc_floor_p50_ms, floor_speedup_c4
                            the same two measures against a bare gRPC server that does nothing
                            (bench/grpc_floor.py), in the same run: the gRPC-Python floor under them
  ratio_100k, ratio_128, ratio_256
                            our single-query time / FAISS IndexBinaryFlat's (bench/index_search.py sizes)

Prints a table and ends with a JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from orbithash.data import ImageRecord, load_split
from orbithash.evaluation.metrics import average_precision
from orbithash.export.onnx_facts import exported_facts
from orbithash.export.repository import DEFAULT_MODEL_NAME, model_path
from orbithash.images import pixels_batch
from orbithash.model_facts import INPUT_NAME, ModelFacts
from orbithash_cli.loadtest import Plan, run_load
from orbithash_client import Item, OrbitHashClient
from orbithash_local.cluster import Cluster, ClusterConfig

REPO = Path(__file__).resolve().parents[1]
BATCH = 32
TARGETS = {"e2e_p50_ms": ("<=", 10.0), "e2e_p99_ms": ("<=", 20.0), "e2e_throughput_ratio": (">=", 0.8),
           "ingest_ratio": (">=", 0.9), "shard_bytes_per_item": ("<=", 64.0), "redis_bytes_per_item": ("<=", 64.0),
           "rpc_p50_ms": ("<=", 0.9), "shard_concurrency_speedup": (">=", 1.8), "ratio_100k": ("<=", 1.0),
           "ratio_128": ("<=", 1.0), "ratio_256": ("<=", 1.0)}


def components(quick: bool) -> dict[str, float]:
    """The per-part figures of the issue's table, each from the bench that owns it (same protocol)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import index_search
    import redis_memory
    import shard_concurrency

    out: dict = {}
    index_search.memory_section(1_000_000, out)
    out["redis_bytes_per_item"] = redis_memory.measure(1_000_000)["redis_bytes_per_item"]
    index_search.rpc_section(100_000 if quick else 1_000_000, out)
    shard_concurrency.measure(100_000, 3.0 if quick else 8.0, REPO, out)
    index_search.sizes_section(300_000 if quick else 1_000_000, 400 if quick else 200, out)
    return {"shard_bytes_per_item": out["bytes_per_item_index"], "redis_bytes_per_item": out["redis_bytes_per_item"],
            "rpc_p50_ms": out["rpc_p50_ms"], "shard_concurrency_speedup": out["speedup_c4_100k"],
            "ratio_100k": out["ratio_100k"], "ratio_128": out["ratio_128"], "ratio_256": out["ratio_256"],
            "shard_rss_bytes_per_item": out.get("bytes_per_item_shard"), "rpc_items": out.get("n_rpc"),
            "rpc_floor_p50_ms": out["rpc_floor_p50_ms"], "floor_speedup_c4": out["floor_speedup_c4_100k"]}


def reference_rate(session: ort.InferenceSession, facts: ModelFacts, images: list[bytes]) -> float:
    """Plain ONNX Runtime img/s: decode + resize + session.run, batch 32 (one warm-up batch)."""
    session.run(None, {INPUT_NAME: pixels_batch(images[:BATCH], facts)})
    start = time.perf_counter()
    done = 0
    for i in range(0, len(images) - BATCH + 1, BATCH):
        session.run(None, {INPUT_NAME: pixels_batch(images[i:i + BATCH], facts)})
        done += BATCH
    return done / (time.perf_counter() - start)


def ingest(address: str, records: list[ImageRecord], streams: int, **security: object) -> tuple[float, int]:
    """The database through the gateway, ``streams`` concurrent clients, batches of 32: (img/s, stored).

    Four streams by default, as an operator's ``orbithash ingest`` sends them. ``security``: the
    client's TLS and token options."""
    chunks = [records[a:a + BATCH * 4] for a in range(0, len(records), BATCH * 4)]

    def send(chunk: list[ImageRecord]) -> int:
        with OrbitHashClient(address, timeout=300, **security) as client:
            items = [Item(r.id, r.data, label=r.label) for r in chunk]
            return client.ingest(items, batch_size=BATCH).ingested

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        stored = sum(pool.map(send, chunks))
    return len(records) / (time.perf_counter() - start), stored


def served_map(address: str, queries: list[ImageRecord], database: int) -> float:
    """mAP over the whole database ranking, each query sent as an image to the gateway."""
    aps = []
    with OrbitHashClient(address, timeout=120) as client:
        for rec in queries:
            result = client.search(image=rec.data, k=database)
            aps.append(average_precision(np.fromiter((h.label == rec.label for h in result), bool, len(result.hits))))
    return float(np.mean(aps))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples, 5 mAP queries per class (≈ 3 min)")
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    parser.add_argument("--streams", type=int, default=4,
                        help="concurrent ingest clients (default 4, as `orbithash ingest --streams`)")
    parser.add_argument("--skip-components", action="store_true",
                        help="only the cluster's figures, not the per-part ones (memory, RPC, FAISS ratios)")
    args = parser.parse_args(argv)
    n_latency, load_s, n_reference, per_class = (60, 10.0, 256, 5) if args.quick else (300, 30.0, 512, None)
    path = model_path(args.model_repository, DEFAULT_MODEL_NAME)
    if not path.exists():
        print(f"no exported model in {args.model_repository}: run `bash scripts/demo.sh` (or orbithash train) first",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # a CI timeout unwinds like Ctrl-C: the cluster is stopped

    split = load_split(None)
    facts: ModelFacts = exported_facts(args.model_repository)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference_images = [r.data for r in split.database[::max(1, len(split.database) // n_reference)]][:n_reference]
    if per_class is None:
        queries = split.queries
    else:
        taken: dict[int, int] = {}
        queries = [r for r in split.queries if taken.setdefault(r.label, 0) < per_class
                   and not taken.__setitem__(r.label, taken[r.label] + 1)]
    query_images = [r.data for r in split.queries]
    with tempfile.TemporaryDirectory(prefix="orbithash-e2e-") as tmp:
        config = ClusterConfig(model_repository=args.model_repository, work_dir=Path(tmp), shards=2,
                               max_k=max(10_000, len(split.database)), thumbnail_size=0)
        reference = [reference_rate(session, facts, reference_images)]
        with Cluster(config) as cluster:
            assert cluster.gateway is not None
            address = cluster.gateway.address
            ingest_rate, stored = ingest(address, split.database, args.streams)

            def make_client() -> OrbitHashClient:
                return OrbitHashClient(address, timeout=30, retries=0)

            single = run_load(make_client, Plan(mix={"search-image": 1}, concurrency=1, duration_s=None,
                                                requests=n_latency, warmup_s=1.0, timeout_s=30.0), query_images)
            loaded = run_load(make_client, Plan(mix={"search-image": 1}, concurrency=8, duration_s=load_s,
                                                warmup_s=2.0, timeout_s=30.0), query_images)
            ucm_map = served_map(address, queries, len(split.database))
            reference.append(reference_rate(session, facts, reference_images))
    ref = statistics.mean(reference)
    one = single.summary["kinds"]["search-image"]  # type: ignore[index]
    eight = loaded.summary["kinds"]["search-image"]  # type: ignore[index]
    e2e_rate = eight["ok"] / loaded.summary["elapsed_s"]  # type: ignore[operator]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    figures = {
        "e2e_p50_ms": one["p50_ms"], "e2e_p99_ms": one["p99_ms"],
        "e2e_throughput_ratio": round(e2e_rate / ref, 3), "ingest_ratio": round(ingest_rate / ref, 3),
        "ucm_map_served": round(ucm_map, 4),
        "e2e_img_s": round(e2e_rate, 1), "ingest_img_s": round(ingest_rate, 1),
        "onnxruntime_batch32_img_s": round(ref, 1), "onnxruntime_runs_img_s": [round(r, 1) for r in reference],
        "e2e_errors_c1": one["errors"], "e2e_errors_c8": eight["errors"], "e2e_p50_ms_c8": eight["p50_ms"],
        "e2e_p99_ms_c8": eight["p99_ms"], "ingested": stored, "database": len(split.database),
        "map_queries": len(queries), "latency_samples": one["ok"], "load_s": load_s, "quick": args.quick,
        "ingest_streams": args.streams, "cpus": _cpus(), "machine": platform.processor() or platform.machine(),
        "commit": commit,
    }
    if not args.skip_components:
        figures.update(components(args.quick))
    figures["targets_missed"] = [name for name, (op, bound) in TARGETS.items() if name in figures
                                 and (figures[name] is None or not _meets(float(figures[name]), op, bound))]
    rows = [("search by image, c=1, p50 / p99 ms", f"{one['p50_ms']} / {one['p99_ms']}", "≤ 10 / ≤ 20"),
            ("image queries/s, c=8", f"{e2e_rate:.1f}", ""),
            ("ingest img/s", f"{ingest_rate:.1f}", ""),
            ("ONNX Runtime batch 32 img/s", " / ".join(f"{r:.1f}" for r in reference), "(before / after)"),
            ("e2e_throughput_ratio", f"{figures['e2e_throughput_ratio']}", "≥ 0.8"),
            ("ingest_ratio", f"{figures['ingest_ratio']}", "≥ 0.9"),
            ("UC Merced mAP, served", f"{ucm_map:.4f}", f"{len(queries)} queries")]
    rows += [(name, str(figures[name]), f"{op} {bound:g}") for name, (op, bound) in TARGETS.items()
             if name in figures and name not in ("e2e_p50_ms", "e2e_p99_ms", "e2e_throughput_ratio", "ingest_ratio")]
    rows += [(name, str(figures[name]), "reference: a bare gRPC server") for name in ("rpc_floor_p50_ms",
                                                                                      "floor_speedup_c4")
             if name in figures]
    print(f"model {facts.version} ({facts.bits} bits), {len(split.database)} database images, {_cpus()} CPUs")
    print("| measure | value | target |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(json.dumps(figures))
    return 0


def _meets(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
