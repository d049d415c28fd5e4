"""Where one image query's time goes: each layer of the path timed alone, at concurrency 1.

    .venv/bin/python bench/latency_breakdown.py [--samples 100]

Starts the local cluster as bench/end_to_end.py does (redis-server, tritonserver, encoder, two
shards, gateway; UC Merced ingested), then times, for the same query images, each layer alone
and the layers together, innermost first:

  decode            the query bytes to the model's uint8 tensor (``pixels_batch``), in this process
  onnxruntime       ``session.run`` of that tensor, batch 1, in this process (the same model file)
  triton            the tensor sent to tritonserver with tritonclient (gRPC), batch 1
  encoder           ``Encoder.Encode`` of the image bytes (decode in the encoder + Triton)
  shard             ``IndexShard.Search`` of one shard, k = 10, packed
  gateway_code      ``Gateway.Search`` by code (two shards, merge), k = 10
  gateway_image     ``Gateway.Search`` by image, k = 10: the whole path
  gateway_health    the gateway's gRPC health check: an empty call through its server

Then ``shard`` and ``gateway_health`` again with ``--idle-ms`` (2) of sleep before each call, not
timed (rows ``shard_idle``, ``gateway_health_idle``): at concurrency 1 every process on the path
is idle when its request comes, and the difference is what waking it costs on this machine.

Each row's p50 minus the rows it contains is what that hop adds (printed as "adds"). Prints a
table and a final JSON line (``<layer>_p50_ms``, ``<layer>_p99_ms``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orbithash.data import load_split
from orbithash.export.onnx_facts import exported_facts
from orbithash.export.repository import DEFAULT_MODEL_NAME, model_path
from orbithash.images import pixels_batch
from orbithash.model_facts import INPUT_NAME
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_client import Item, OrbitHashClient
from orbithash_local.cluster import Cluster, ClusterConfig

REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[int], object], n: int, idle_s: float = 0.0) -> list[float]:
    """ms per call of ``fn(i)``, after one untimed warm-up call; ``idle_s`` of sleep before each."""
    fn(0)  # warm
    out = []
    for i in range(n):
        if idle_s:
            time.sleep(idle_s)
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--idle-ms", type=float, default=2.0, help="sleep before each call of the *_idle rows")
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    args = parser.parse_args(argv)
    split = load_split(None)
    facts = exported_facts(args.model_repository)
    images = [r.data for r in split.queries[::max(1, len(split.queries) // args.samples)]][:args.samples]
    n = len(images)
    tensors = [pixels_batch([im], facts) for im in images]
    session = ort.InferenceSession(str(model_path(args.model_repository, DEFAULT_MODEL_NAME)),
                                   providers=["CPUExecutionProvider"])
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="orbithash-breakdown-") as tmp:
        config = ClusterConfig(model_repository=args.model_repository, work_dir=Path(tmp), shards=2, thumbnail_size=0)
        with Cluster(config) as cluster:
            assert cluster.gateway is not None and cluster.encoder is not None and cluster.triton is not None
            with OrbitHashClient(cluster.gateway.address, timeout=300) as client:
                client.ingest([Item(r.id, r.data, label=r.label) for r in split.database], batch_size=32)
                codes = [client.search(image=im, k=1).query.code for im in images]  # type: ignore[union-attr]
            triton = tg.InferenceServerClient(cluster.triton.url)
            with grpc.insecure_channel(cluster.encoder.address) as enc, \
                    grpc.insecure_channel(cluster.shards[0].address) as sh, \
                    grpc.insecure_channel(cluster.gateway.address) as gw:
                encoder, shard, gateway = rpc.EncoderStub(enc), rpc.IndexShardStub(sh), rpc.GatewayStub(gw)
                health = health_pb2_grpc.HealthStub(gw)

                def infer(i: int) -> None:
                    inp = tg.InferInput(INPUT_NAME, list(tensors[i].shape), "UINT8")
                    inp.set_data_from_numpy(tensors[i])
                    triton.infer(config.model_name, [inp])

                layers: dict[str, Callable[[int], object]] = {
                    "decode": lambda i: pixels_batch([images[i]], facts),
                    "onnxruntime": lambda i: session.run(None, {INPUT_NAME: tensors[i]}),
                    "triton": infer,
                    "encoder": lambda i: encoder.Encode(pb.EncodeRequest(images=[images[i]]), timeout=30),
                    "shard": lambda i: shard.Search(pb.ShardSearchRequest(
                        codes=[codes[i]], k=10, bits=facts.bits, model_version=facts.version, packed=True), timeout=30),
                    "gateway_code": lambda i: gateway.Search(pb.SearchRequest(code=codes[i], k=10), timeout=30),
                    "gateway_image": lambda i: gateway.Search(pb.SearchRequest(image=images[i], k=10), timeout=30),
                    "gateway_health": lambda i: health.Check(health_pb2.HealthCheckRequest(), timeout=30),
                }
                for _ in range(2):  # twice, alternating, so a drift in load hits every layer
                    for name, fn in layers.items():
                        times.setdefault(name, []).extend(timed(fn, n))
                    for name in ("shard", "gateway_health"):
                        times.setdefault(f"{name}_idle", []).extend(timed(layers[name], n, args.idle_ms / 1e3))
            triton.close()
    p50 = {name: statistics.median(ts) for name, ts in times.items()}
    p99 = {name: float(np.percentile(ts, 99)) for name, ts in times.items()}
    adds = {"decode": p50["decode"], "onnxruntime": p50["onnxruntime"],
            "triton": p50["triton"] - p50["onnxruntime"], "encoder": p50["encoder"] - p50["triton"] - p50["decode"],
            "shard": p50["shard"], "gateway_code": p50["gateway_code"] - p50["shard"],
            "gateway_image": p50["gateway_image"] - p50["gateway_code"] - p50["encoder"],
            "gateway_health": p50["gateway_health"], "shard_idle": p50["shard_idle"] - p50["shard"],
            "gateway_health_idle": p50["gateway_health_idle"] - p50["gateway_health"]}
    print(f"{n} query images x 2, concurrency 1, model {facts.version}")
    print("| layer | p50 ms | p99 ms | adds (p50) ms |\n|---|---|---|---|")
    for name in times:
        print(f"| {name} | {p50[name]:.2f} | {p99[name]:.2f} | {adds[name]:.2f} |")
    print(json.dumps({**{f"{k}_p50_ms": round(v, 3) for k, v in p50.items()},
                      **{f"{k}_p99_ms": round(v, 3) for k, v in p99.items()},
                      **{f"{k}_adds_ms": round(v, 3) for k, v in adds.items()}, "samples": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
