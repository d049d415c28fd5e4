"""What TLS on every hop plus bearer tokens cost a search, against the plaintext cluster in the same run.

    .venv/bin/python bench/security_cost.py --quick        # ≈ 1 min, embedded encoders (the CI version)
    .venv/bin/python bench/security_cost.py                # Triton behind both, more samples

Starts two local clusters side by side from the exported model in model_repository/: one as
``orbithash up`` does, one as ``orbithash up --tls`` does (TLS to the gateway, mutual TLS to
encoder, shards, Triton and Redis, a token checked on every call). Both get the same UC Merced
database subset. Then, in alternating rounds so that drift hits both alike, one client per cluster
sends, one at a time:

  search by id      gateway → shards (the cheapest public call: what the transport costs shows most)
  search by image   gateway → encoder (→ Triton) → shards

and a new connection's first call (channel set-up + handshake) is timed too. Prints p50/p99 per
kind and cluster, the difference, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from orbithash.data import load_split
from orbithash_client import Item, OrbitHashClient
from orbithash_local.cluster import Cluster, ClusterConfig

REPO = Path(__file__).resolve().parents[1]


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def client_for(cluster: Cluster) -> OrbitHashClient:
    assert cluster.gateway is not None
    if cluster.security is None:
        return OrbitHashClient(cluster.gateway.address, timeout=60, retries=0)
    token = cluster.security.token_files["admin"].read_text().strip()
    return OrbitHashClient(cluster.gateway.address, timeout=60, retries=0, ca_file=cluster.security.ca, token=token)


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def measure_round(client: OrbitHashClient, cluster: Cluster, samples: dict[str, list[float]], ids: list[str],
                  images: list[bytes], connects: int = 3) -> None:
    for item_id in ids:
        samples["id"].append(timed(lambda: client.search(id=item_id, k=10)))  # noqa: B023 - called at once
    for image in images:
        samples["image"].append(timed(lambda: client.search(image=image, k=10)))  # noqa: B023
    for _ in range(connects):
        def connect_and_call() -> None:
            with client_for(cluster) as fresh:
                fresh.info()
        samples["connect"].append(timed(connect_and_call))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples, embedded encoders")
    parser.add_argument("--embedded", action="store_true", help="in-process ONNX Runtime instead of Triton")
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: UC Merced from ../shared/data)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 10, quick 4)")
    parser.add_argument("--per-round", type=int, default=None, help="calls per kind per round (default 40, quick 15)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 10)
    per_round = args.per_round or (15 if args.quick else 40)
    embedded = args.embedded or args.quick

    split = load_split(args.data, limit_per_class=10 if args.quick else 40)
    database, queries = split.database, [r.data for r in split.queries]
    samples: dict[str, dict[str, list[float]]] = {m: {"id": [], "image": [], "connect": []} for m in ("plain", "tls")}
    with tempfile.TemporaryDirectory(prefix="orbithash-security-cost-") as work:
        clusters = {}
        try:
            for mode in ("plain", "tls"):
                config = ClusterConfig(model_repository=args.model_repository, work_dir=Path(work) / mode, shards=2,
                                       use_triton=not embedded, tls=mode == "tls")
                clusters[mode] = Cluster(config)
                clusters[mode].start()
            clients = {mode: client_for(cluster) for mode, cluster in clusters.items()}
            for mode, client in clients.items():
                stored = client.ingest([Item(r.id, r.data, label=r.label) for r in database], batch_size=32)
                assert stored.ingested == len(database), (mode, stored)
                client.search(id=database[0].id, k=10)  # warm: channels, sessions, caches
                client.search(image=queries[0], k=10)
            ids = [r.id for r in database]
            for round_ in range(rounds):
                for mode in (("plain", "tls") if round_ % 2 == 0 else ("tls", "plain")):
                    first = round_ * per_round
                    measure_round(clients[mode], clusters[mode], samples[mode],
                                  [ids[(first + i) % len(ids)] for i in range(per_round)],
                                  [queries[(first + i) % len(queries)] for i in range(per_round)])
            for client in clients.values():
                client.close()
        finally:
            for cluster in clusters.values():
                cluster.stop()

    figures: dict[str, object] = {}
    print(f"{'kind':<16}{'plain p50':>11}{'tls p50':>10}{'plain p99':>11}{'tls p99':>10}{'Δp50 ms':>10}{'Δp99 ms':>10}")
    for kind in ("id", "image", "connect"):
        row = {mode: (percentile(samples[mode][kind], 50), percentile(samples[mode][kind], 99)) for mode in samples}
        name = f"search_{kind}" if kind != "connect" else "connect"
        for mode in samples:
            figures[f"{name}_p50_ms_{mode}"] = round(row[mode][0], 2)
            figures[f"{name}_p99_ms_{mode}"] = round(row[mode][1], 2)
        figures[f"tls_auth_cost_{kind}_p50_ms"] = round(row["tls"][0] - row["plain"][0], 2)
        figures[f"tls_auth_cost_{kind}_p99_ms"] = round(row["tls"][1] - row["plain"][1], 2)
        label = {"id": "search by id", "image": "search by image", "connect": "connect + call"}[kind]
        print(f"{label:<16}{row['plain'][0]:>11.2f}{row['tls'][0]:>10.2f}{row['plain'][1]:>11.2f}{row['tls'][1]:>10.2f}"
              f"{row['tls'][0] - row['plain'][0]:>10.2f}{row['tls'][1] - row['plain'][1]:>10.2f}")
    figures.update({"samples_per_kind": rounds * per_round, "encoder": "embedded" if embedded else "triton",
                    "database": len(database), "machine": platform.machine(), "cpus": _cpus()})
    print(json.dumps(figures))
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
