"""Encoder throughput: through Triton, through the embedded encoder, and plain ONNX Runtime.

    python bench/encoder_throughput.py [--quick] [--images 256]

Same model (model_repository/orbithash, trained first if missing), same UC Merced JPEGs, same run.
Three paths, batch sizes 1, 8 and 32, sequential requests from one client:
  triton      gRPC Encode → encoder service → Triton (python backend running ONNX Runtime)
  embedded    gRPC Encode → encoder service with in-process ONNX Runtime
  onnxruntime no service: decode + resize + session.run in this process (the reference)
``overhead_ratio`` = triton img/s ÷ onnxruntime img/s at batch 32 (target ≥ 0.85). The plain
inference rate on already decoded pixels is printed too, to show what decoding costs. Ends with a
JSON line of named figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

import encoder_service
from orbithash.data import load_split
from orbithash.export.repository import model_path
from orbithash.images import pixels_batch
from orbithash.model_facts import INPUT_NAME, ModelFacts
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import start_service
from orbithash_local.demo import ensure_model
from orbithash_local.triton import TritonServer

BATCHES = (1, 8, 32)
REPO = Path(__file__).resolve().parents[1] / "model_repository"


def rate(fn: Callable[[list[bytes]], None], images: list[bytes], batch: int) -> float:
    fn(images[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images) - batch + 1, batch):
        fn(images[i:i + batch])
    done = (len(images) // batch) * batch
    return done / (time.perf_counter() - start)


def latencies(fn: Callable[[list[bytes]], None], image: bytes, n: int) -> tuple[float, float]:
    fn([image])
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn([image])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and latency samples")
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    n_images = 64 if args.quick else args.images
    n_latency = 20 if args.quick else 100

    split = load_split(None)
    facts: ModelFacts = ensure_model(split, REPO, bits=64, retrain=False)
    images = [r.data for r in (split.database + split.queries)[:n_images]]
    session = ort.InferenceSession(str(model_path(REPO)), providers=["CPUExecutionProvider"])

    def plain(batch: list[bytes]) -> None:
        session.run(None, {INPUT_NAME: pixels_batch(batch, facts)})

    tensors = pixels_batch(images, facts)

    def inference_only(batch: list[bytes]) -> None:
        session.run(None, {INPUT_NAME: tensors[: len(batch)]})

    results: dict[str, dict[int, float]] = {"triton": {}, "embedded": {}, "onnxruntime": {}, "inference_only": {}}
    lat: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="orbithash-bench-") as tmp:
        work = Path(tmp)
        triton = TritonServer(REPO, work / "triton")
        services = {
            "triton": start_service("encoder-triton", encoder_service,
                                    ["--triton-url", triton.url, "--model-repository", str(REPO)], work / "logs"),
            "embedded": start_service("encoder-embedded", encoder_service,
                                      ["--model-repository", str(REPO)], work / "logs"),
        }
        try:
            for name, service in services.items():
                with grpc.insecure_channel(service.address) as channel:
                    stub = rpc.EncoderStub(channel)

                    def encode(batch: list[bytes], stub: rpc.EncoderStub = stub) -> None:
                        stub.Encode(pb.EncodeRequest(images=batch), timeout=120)

                    for b in BATCHES:
                        results[name][b] = rate(encode, images, b)
                    lat[name] = latencies(encode, images[0], n_latency)
                service.process.stop()  # one service at a time on the 2 cores
            for b in BATCHES:
                results["onnxruntime"][b] = rate(plain, images, b)
                results["inference_only"][b] = rate(inference_only, images, b)
            lat["onnxruntime"] = latencies(plain, images[0], n_latency)
        finally:
            for service in services.values():
                service.process.stop()
            triton.stop()

    print(f"model {facts.version} ({facts.bits} bits, {facts.input_size}px), {len(images)} UC Merced JPEGs, "
          f"{platform.processor() or platform.machine()}, CPU")
    print(f"{'path':<16}" + "".join(f"{'batch ' + str(b):>12}" for b in BATCHES) + f"{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in results.items():
        p50, p99 = lat.get(name, (float("nan"), float("nan")))
        print(f"{name:<16}" + "".join(f"{row[b]:>10.1f}/s" for b in BATCHES) + f"{p50:>10.1f}{p99:>10.1f}")
    overhead = results["triton"][32] / results["onnxruntime"][32]
    print(f"overhead_ratio (triton / onnxruntime, batch 32) = {overhead:.3f}  (target >= 0.85)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    figures = {
        "triton_img_s": {str(b): round(v, 1) for b, v in results["triton"].items()},
        "embedded_img_s": {str(b): round(v, 1) for b, v in results["embedded"].items()},
        "onnxruntime_img_s": {str(b): round(v, 1) for b, v in results["onnxruntime"].items()},
        "inference_only_img_s": {str(b): round(v, 1) for b, v in results["inference_only"].items()},
        "overhead_ratio": round(overhead, 3),
        "embedded_overhead_ratio": round(results["embedded"][32] / results["onnxruntime"][32], 3),
        "triton_p50_ms": round(lat["triton"][0], 2), "triton_p99_ms": round(lat["triton"][1], 2),
        "embedded_p50_ms": round(lat["embedded"][0], 2), "embedded_p99_ms": round(lat["embedded"][1], 2),
        "images": len(images), "device": "cpu", "commit": commit, "model_version": facts.version,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
