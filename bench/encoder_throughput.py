"""Encoder throughput: through Triton, through the embedded encoder, and plain ONNX Runtime.

    python bench/encoder_throughput.py [--quick] [--images 256]

Same model (model_repository/orbithash, trained first if missing), same UC Merced JPEGs, same run.
Three paths, batch sizes 1, 8 and 32, sequential requests from one client:
  triton      gRPC Encode → encoder service → Triton (python backend running ONNX Runtime)
  embedded    gRPC Encode → encoder service with in-process ONNX Runtime
  onnxruntime no service: decode + resize + session.run in this process (the reference)
``overhead_ratio`` = triton img/s ÷ onnxruntime img/s at batch 32 (target ≥ 0.85). The plain
inference rate on already decoded pixels is printed too, to show what decoding costs.

Served variants (``orbithash.export.quantize``): FP32, graph-optimised and static INT8 (QDQ and
QOperator) are built from ``model.fp32.onnx`` as the export builds them, each served by its own
embedded encoder (batch 1/8/32) and timed on decoded pixels (interleaved, best of 3), with each
one's UC Merced mAP (the whole 1680/420 split; ``--quick`` takes it from the export's
``serving.json`` when the built variant's version is the one recorded there). Then the decode +
resize cost per image format (``orbithash.images.decode_pixels`` to 224 px). Ends with a JSON line
of named figures.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import tifffile
from PIL import Image

import encoder_service
from encoder_service.backends import OnnxRuntimeBackend, TritonBackend
from orbithash.data import Split, load_split
from orbithash.export import quantize
from orbithash.export.onnx_facts import load_facts_from_onnx
from orbithash.export.repository import fp32_model_path, model_path
from orbithash.images import decode_image, decode_pixels, pixels_batch
from orbithash.model_facts import INPUT_NAME, ModelFacts
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import start_service
from orbithash_local.demo import ensure_model
from orbithash_local.triton import TritonServer

BATCHES = (1, 8, 32)
VARIANTS = ("fp32", "optimised", "int8-qdq", "int8-qop")
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


def format_samples(jpegs: list[bytes]) -> dict[str, list[bytes]]:
    """The same scenes as JPEG (as shipped), PNG, TIFF 8-bit RGB, TIFF 16-bit 4-band, and JPEG at 2048 px."""
    out: dict[str, list[bytes]] = {k: [] for k in ("jpeg", "png", "tiff8_rgb", "tiff16_4band", "jpeg_2048px")}
    for data in jpegs:
        rgb = decode_image(data)
        out["jpeg"].append(data)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG")
        out["png"].append(buf.getvalue())
        buf = io.BytesIO()
        tifffile.imwrite(buf, rgb, photometric="rgb")
        out["tiff8_rgb"].append(buf.getvalue())
        deep = rgb.astype(np.uint16) * 257
        bands = np.concatenate([deep, deep[:, :, 1:2]], axis=2)  # R, G, B + a near-infrared-like band
        buf = io.BytesIO()
        tifffile.imwrite(buf, bands, photometric="minisblack", planarconfig="contig")
        out["tiff16_4band"].append(buf.getvalue())
        buf = io.BytesIO()
        Image.fromarray(rgb).resize((2048, 2048), Image.BILINEAR).save(buf, "JPEG", quality=90)
        out["jpeg_2048px"].append(buf.getvalue())
    return out


def decode_costs(samples: dict[str, list[bytes]], size: int, rounds: int = 3) -> dict[str, float]:
    """ms per image of decode + resize to the model's input (best of ``rounds`` passes)."""
    costs = {}
    for name, images in samples.items():
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for data in images:
                decode_pixels(data, size)
            best = min(best, (time.perf_counter() - start) / len(images) * 1000)
        costs[name] = best
    return costs


def build_variant_repos(work: Path, split: Split, quick: bool) -> tuple[dict[str, Path], dict[str, float]]:
    """One model repository per variant (serving it as model.onnx), and each variant's mAP."""
    fp32 = fp32_model_path(REPO)
    if not fp32.is_file():
        fp32 = model_path(REPO)  # a repository that serves its FP32 export
    fp32_facts = load_facts_from_onnx(fp32)
    record = quantize.read_record(REPO) or {}
    recorded = {v["version"]: v["map"] for v in record.get("variants", {}).values()}  # type: ignore[union-attr]
    data = quantize.EvalSet.from_split(split, fp32_facts)
    repos, maps = {}, {}
    for variant in VARIANTS:
        built = fp32 if variant == "fp32" else work / f"model.{variant}.onnx"
        facts = fp32_facts if variant == "fp32" else quantize.build_variant(variant, fp32, built, data.calibration)
        repo = work / f"repo-{variant}"
        shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
        quantize.install(repo, "orbithash", built, facts, fp32_facts)
        repos[variant] = repo
        maps[variant] = (recorded[facts.version] if quick and facts.version in recorded
                         else quantize.retrieval_map(built, data))
    return repos, maps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and latency samples")
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    n_images = 64 if args.quick else args.images
    n_latency = 20 if args.quick else 100

    split = load_split(None)
    facts: ModelFacts = ensure_model(split, REPO, bits=64, retrain=False)
    served = str((quantize.read_record(REPO) or {}).get("served", "fp32"))
    images = [r.data for r in (split.database + split.queries)[:n_images]]
    session = ort.InferenceSession(str(model_path(REPO)), providers=["CPUExecutionProvider"])

    def plain(batch: list[bytes]) -> None:
        session.run(None, {INPUT_NAME: pixels_batch(batch, facts)})

    tensors = pixels_batch(images, facts)

    def inference_only(batch: list[bytes]) -> None:
        session.run(None, {INPUT_NAME: tensors[: len(batch)]})

    results: dict[str, dict[int, float]] = {"triton": {}, "embedded": {}, "onnxruntime": {}, "inference_only": {}}
    lat: dict[str, tuple[float, float]] = {}
    variant_embedded: dict[str, dict[int, float]] = {}
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
            served_versions = {"triton": TritonBackend(triton.url, "orbithash", 30.0).facts.version,
                               "embedded": OnnxRuntimeBackend(model_path(REPO)).facts.version}
            triton.stop()
            repos, maps = build_variant_repos(work / "variants", split, args.quick)
            for variant, repo in repos.items():
                service = start_service(f"encoder-{variant}", encoder_service, ["--model-repository", str(repo)],
                                        work / "logs")
                try:
                    with grpc.insecure_channel(service.address) as channel:
                        stub = rpc.EncoderStub(channel)

                        def encode_v(batch: list[bytes], stub: rpc.EncoderStub = stub) -> None:
                            stub.Encode(pb.EncodeRequest(images=batch), timeout=120)

                        variant_embedded[variant] = {b: rate(encode_v, images, b) for b in BATCHES}
                finally:
                    service.process.stop()
            variant_inference = quantize.inference_rates(
                {v: model_path(repo) for v, repo in repos.items()}, tensors, BATCHES)
            decode_ms = decode_costs(format_samples(images[:16 if args.quick else 64]), facts.input_size)
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
    print(f"\nserved variants (mAP on UC Merced {len(split.database)}/{len(split.queries)}; "
          f"served now: {served}, tolerance 0.003 below fp32)")
    print(f"{'variant':<12}{'mAP':>8}" + "".join(f"{'emb b' + str(b):>12}" for b in BATCHES)
          + "".join(f"{'inf b' + str(b):>12}" for b in BATCHES))
    for v in VARIANTS:
        print(f"{v:<12}{maps[v]:>8.4f}" + "".join(f"{variant_embedded[v][b]:>10.1f}/s" for b in BATCHES)
              + "".join(f"{variant_inference[v][b]:>10.1f}/s" for b in BATCHES))
    print("decode + resize to 224 px, ms/image: " + ", ".join(f"{k} {v:.2f}" for k, v in decode_ms.items()))
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
        "served_variant": served, "triton_model_version": served_versions["triton"],
        "embedded_model_version": served_versions["embedded"],
        "variant_map": {v: round(m, 5) for v, m in maps.items()},
        "variant_map_drop": {v: round(maps["fp32"] - m, 5) for v, m in maps.items()},
        "variant_embedded_img_s": {v: {str(b): round(x, 1) for b, x in r.items()} for v, r in variant_embedded.items()},
        "variant_inference_img_s": {v: {str(b): round(x, 1) for b, x in r.items()}
                                    for v, r in variant_inference.items()},
        "decode_resize_ms": {k: round(v, 3) for k, v in decode_ms.items()},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
