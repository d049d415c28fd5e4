"""Faster served variants of an exported model, measured on the model's split, and the choice among them.

    python -m orbithash.export.quantize --model-repository model_repository [--data PATH] [--fp32]

Variants of the FP32 export (all take the same uint8 pixels and give the same outputs):

- ``optimised``: ONNX Runtime's graph optimisations applied offline (level EXTENDED: constant
  folding, Conv+BN+activation fusions), saved with ``SessionOptions.optimized_model_filepath``.
  Level ALL adds the NCHWc (channels-last blocked) layout, which is CPU-specific when saved; ORT
  applies it at load to every model anyway, so the FP32 model already runs channels-last.
- ``int8-qdq`` / ``int8-qop``: static INT8 (``quantize_static``), per-channel int8 weights (7-bit
  range, see :func:`build_int8`), uint8 activations, the hash head kept float, MinMax ranges
  calibrated on training images decoded and resized exactly as the encoder does
  (:func:`orbithash.images.pixels_batch`); QDQ or QOperator graph format.

:func:`serve_fastest` builds them, scores each on the split (mAP over the whole database, the
number ``orbithash train`` reports) and times inference on the decoded pixels, then serves as
``model.onnx`` the fastest variant whose mAP is within ``tolerance`` of FP32's, else FP32. The FP32
export stays as ``model.fp32.onnx``; ``serving.json`` records the choice and every figure.

A served variant is a different model: its codes differ from FP32's in a few bits. It gets its own
version, ``<fp32 version>-<variant>-<6 hex of its bytes>``, in its ONNX metadata and in
``config.pbtxt``, so index shards holding one model's codes refuse the other's and a cluster
never mixes them. The GPU config keeps serving the FP32 file (TensorRT chooses its own precision).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader

from orbithash.bits import pack_signs
from orbithash.data import Split, load_split
from orbithash.evaluation.metrics import mean_average_precision
from orbithash.export.onnx_export import pbtxt_string, triton_config
from orbithash.export.onnx_facts import load_facts_from_onnx
from orbithash.export.repository import (
    DEFAULT_MODEL_NAME,
    FP32_MODEL_FILE,
    config_path,
    fp32_model_path,
    model_path,
    serving_record_path,
)
from orbithash.export.runtime import ExportedModel
from orbithash.export.triton.configs import gpu_config
from orbithash.files import atomic_write
from orbithash.images import pixels_batch
from orbithash.model_facts import INPUT_NAME, ModelFacts, ModelFactsError

log = logging.getLogger(__name__)

FP32 = "fp32"
VARIANTS = ("optimised", "int8-qdq", "int8-qop")
MAP_TOLERANCE = 0.003
CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 16
SPEED_BATCHES = (1, 8, 32)
CHOICE_BATCH = 32  # bulk ingest is what the speed is for; batch 1 is recorded beside it
# A variant must beat FP32 by this factor at CHOICE_BATCH: on a shared 2-core machine the
# graph-optimised FP32 (no real gain) once timed 1.11× FP32, and a variant that is not really faster
# only costs a new version and a re-index (its codes differ from FP32's); INT8 measured 1.36-1.94×.
MIN_SPEEDUP = 1.2
FLOAT_OPS = ("Gemm",)  # the head: hash layer and classifier
SERVING_KEY = "orbithash_serving."  # ONNX metadata beside the facts (ModelFacts reads only "orbithash.")


@dataclass(frozen=True)
class Measured:
    """One candidate's figures: mAP on the split and inference img/s (decoded pixels) per batch size."""

    variant: str
    version: str
    map: float
    img_s: Mapping[int, float]

    def speed(self, batch: int = CHOICE_BATCH) -> float:
        return self.img_s[batch]


def choose(fp32: Measured, candidates: Sequence[Measured], tolerance: float = MAP_TOLERANCE,
           batch: int = CHOICE_BATCH, min_speedup: float = MIN_SPEEDUP) -> Measured:
    """The fastest candidate at least ``min_speedup`` times FP32's speed whose mAP is at most
    ``tolerance`` below FP32's, else FP32."""
    kept = [c for c in candidates
            if c.map >= fp32.map - tolerance and c.speed(batch) >= min_speedup * fp32.speed(batch)]
    return max(kept, key=lambda c: c.speed(batch), default=fp32)


# -- building the variants ---------------------------------------------------------------------------


class PixelReader(CalibrationDataReader):
    """ONNX Runtime calibration data: batches of N×3×S×S uint8 pixels under the model's input name."""

    def __init__(self, pixels: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self._batches = iter([pixels[i:i + batch] for i in range(0, len(pixels), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def build_optimised(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """ORT graph optimisation (EXTENDED: portable across CPUs) saved offline."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])


def build_int8(fp32: Path, out: Path, calibration: np.ndarray, *, qdq: bool) -> None:
    """Static INT8: per-channel int8 weights, uint8 activations, MinMax ranges on ``calibration`` pixels.

    ``reduce_range`` (7-bit weights): x86 CPUs without VNNI (AVX2, as here) multiply u8×s8 with
    ``vpmaddubsw``, whose int16 sums saturate at 8-bit weights; on UC Merced that cost 0.005 mAP,
    with 7 bits 0.0001. The hash and classifier layers (``FLOAT_OPS``, two small Gemms whose output
    signs are the code) stay float: quantising them saves nothing measurable.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="orbithash-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        float_nodes = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in FLOAT_OPS]
        quantize_static(str(prepared), str(out), PixelReader(calibration),
                        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
                        per_channel=True, reduce_range=True, nodes_to_exclude=float_nodes,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        # merge ranges every few batches: all activations of 300 images would not fit
                        extra_options={"CalibMaxIntermediateOutputs": 4},
                        calibration_providers=["CPUExecutionProvider"])


BUILDERS: dict[str, Callable[[Path, Path, np.ndarray], None]] = {
    "optimised": build_optimised,
    "int8-qdq": lambda fp32, out, cal: build_int8(fp32, out, cal, qdq=True),
    "int8-qop": lambda fp32, out, cal: build_int8(fp32, out, cal, qdq=False),
}


def stamp(path: Path, facts: ModelFacts, variant: str, fp32_version: str) -> ModelFacts:
    """Write the facts into a built variant's metadata, with its own version; the final facts."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    digest = hashlib.sha256(proto.SerializeToString()).hexdigest()[:6]
    facts = replace(facts, version=f"{fp32_version}-{variant}-{digest}")
    extra = {f"{SERVING_KEY}variant": variant, f"{SERVING_KEY}fp32_version": fp32_version}
    for key, value in {**facts.to_params(), **extra}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write(path, proto.SerializeToString())
    return facts


def build_variant(variant: str, fp32: Path, out: Path, calibration: np.ndarray) -> ModelFacts:
    """Build ``variant`` of the FP32 model at ``out``; its facts (FP32's, with the variant's version)."""
    facts = load_facts_from_onnx(fp32)
    BUILDERS[variant](fp32, out, calibration)
    return stamp(out, facts, variant, facts.version)


# -- measuring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """The split decoded once, as the encoder decodes: database, queries, and calibration pixels."""

    db_pixels: np.ndarray
    db_labels: np.ndarray
    query_pixels: np.ndarray
    query_labels: np.ndarray
    calibration: np.ndarray

    @classmethod
    def from_split(cls, split: Split, facts: ModelFacts, calibration_images: int = CALIBRATION_IMAGES,
                   seed: int = 0) -> EvalSet:
        if split.class_names != facts.class_names:
            raise ModelFactsError(f"split {split.name!r} has other classes than model {facts.version}")
        if not split.queries:
            raise ValueError(f"split {split.name!r} has no queries to score on")
        training = split.training
        chosen = np.random.default_rng(seed).permutation(len(training))[:calibration_images]
        return cls(pixels_batch([r.data for r in split.database], facts), split.labels("database"),
                   pixels_batch([r.data for r in split.queries], facts), split.labels("queries"),
                   pixels_batch([training[i].data for i in sorted(chosen)], facts))


def retrieval_map(path: Path, data: EvalSet, batch: int = 32) -> float:
    """mAP (whole database, ties by database order) of the model at ``path``, run as the encoder runs it."""
    model = ExportedModel(path)

    def codes(pixels: np.ndarray) -> np.ndarray:
        return np.concatenate([pack_signs(model.infer(pixels[i:i + batch])[0]) for i in range(0, len(pixels), batch)])

    return mean_average_precision(codes(data.query_pixels), data.query_labels, codes(data.db_pixels),
                                  data.db_labels, bits=model.facts.bits)


def inference_rates(paths: Mapping[str, Path], pixels: np.ndarray, batches: Sequence[int] = SPEED_BATCHES,
                    rounds: int = 3, seconds: float = 0.7, threads: int = 0,
                    max_runs: int = 100) -> dict[str, dict[int, float]]:
    """img/s of ``session.run`` on decoded pixels per model and batch size: best of ``rounds``, the
    models interleaved in each round so that load from other processes hits them alike. A window
    lasts ``seconds`` or ``max_runs`` runs, whichever ends first: a small model's 100 runs already
    span many scheduler ticks, and timing it for the whole window only made its export slow."""
    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    best = {name: dict.fromkeys(batches, 0.0) for name in paths}
    for _ in range(rounds):
        for name, session in sessions.items():
            for b in batches:
                feed = {INPUT_NAME: pixels[:b]}
                session.run(None, feed)  # warm-up
                runs, start = 0, time.perf_counter()
                while (time.perf_counter() - start < seconds and runs < max_runs) or runs == 0:
                    session.run(None, feed)
                    runs += 1
                best[name][b] = max(best[name][b], runs * b / (time.perf_counter() - start))
    return best


# -- choosing and installing -------------------------------------------------------------------------


Scorer = Callable[[Path, EvalSet], float]


def serve_fastest(repo_dir: Path, split: Split | None, *, model_name: str = DEFAULT_MODEL_NAME,
                  variants: Sequence[str] = VARIANTS, tolerance: float = MAP_TOLERANCE, force_fp32: bool = False,
                  calibration_images: int = CALIBRATION_IMAGES, seed: int = 0,
                  scorer: Scorer = retrieval_map) -> dict[str, object]:
    """Build, measure and choose the served ``model.onnx`` of ``repo_dir/<model_name>``; the serving record.

    The FP32 export is ``model.fp32.onnx`` (copied from ``model.onnx`` the first time), so this can
    run again on a repository that already serves a variant. ``force_fp32`` serves FP32 without measuring.
    """
    fp32 = ensure_fp32_copy(repo_dir, model_name)
    fp32_facts = load_facts_from_onnx(fp32)
    unknown = sorted(set(variants) - set(BUILDERS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {sorted(BUILDERS)}")
    record: dict[str, object] = {
        "served": FP32, "version": fp32_facts.version, "fp32_version": fp32_facts.version,
        "fp32_file": FP32_MODEL_FILE, "forced_fp32": force_fp32, "tolerance": tolerance,
        "choice_batch": CHOICE_BATCH, "min_speedup": MIN_SPEEDUP, "onnxruntime": ort.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if force_fp32:
        install(repo_dir, model_name, fp32, fp32_facts, fp32_facts)
        return write_record(repo_dir, model_name, record)
    if split is None:
        raise ValueError("choosing a variant needs the model's split to score on")
    data = EvalSet.from_split(split, fp32_facts, calibration_images, seed)
    record.update(split={"name": split.name, "database": len(data.db_labels), "queries": len(data.query_labels)},
                  calibration_images=len(data.calibration))
    with tempfile.TemporaryDirectory(prefix="orbithash-variants-") as tmp:
        paths, facts = {FP32: fp32}, {FP32: fp32_facts}
        for variant in variants:
            started = time.perf_counter()
            paths[variant] = Path(tmp) / f"model.{variant}.onnx"
            facts[variant] = build_variant(variant, fp32, paths[variant], data.calibration)
            log.info("built %s in %.1f s", variant, time.perf_counter() - started)
        rates = inference_rates(paths, data.db_pixels)
        measured = {name: Measured(name, facts[name].version, scorer(path, data), rates[name])
                    for name, path in paths.items()}
        for m in measured.values():
            log.info("%-10s mAP %.4f  %s img/s", m.variant, m.map, {b: round(v, 1) for b, v in m.img_s.items()})
        chosen = choose(measured[FP32], [m for name, m in measured.items() if name != FP32], tolerance)
        install(repo_dir, model_name, paths[chosen.variant], facts[chosen.variant], fp32_facts)
    record.update(served=chosen.variant, version=chosen.version,
                  variants={name: {"version": m.version, "map": round(m.map, 5),
                                   "img_s": {str(b): round(v, 1) for b, v in m.img_s.items()},
                                   "within_tolerance": m.map >= measured[FP32].map - tolerance}
                            for name, m in measured.items()})
    return write_record(repo_dir, model_name, record)


def ensure_fp32_copy(repo_dir: Path, model_name: str) -> Path:
    """``model.fp32.onnx``: kept if there, else copied from ``model.onnx``, which must then be an FP32 export."""
    fp32 = fp32_model_path(repo_dir, model_name)
    if fp32.is_file():
        return fp32
    served = model_path(repo_dir, model_name)
    if not served.is_file():
        raise FileNotFoundError(f"no exported model at {served}: run `orbithash train` first")
    props = {p.key for p in onnx.load(str(served), load_external_data=False).metadata_props}
    if f"{SERVING_KEY}variant" in props:
        raise ModelFactsError(f"{served} is a served variant and {fp32.name} is missing: export again")
    atomic_write(fp32, served.read_bytes())
    return fp32


def install(repo_dir: Path, model_name: str, chosen: Path, facts: ModelFacts, fp32_facts: ModelFacts) -> None:
    """Serve ``chosen`` as model.onnx with its facts in config.pbtxt; the GPU config serves the FP32 file."""
    served = model_path(repo_dir, model_name)
    atomic_write(served, chosen.read_bytes())
    atomic_write(config_path(repo_dir, model_name), triton_config(facts, model_name).encode())
    gpu = gpu_config(triton_config(fp32_facts, model_name))
    if facts.version != fp32_facts.version:  # TensorRT takes the FP32 graph and picks its own precision
        name_line, rest = gpu.split("\n", 1)
        gpu = f"{name_line}\ndefault_model_filename: {pbtxt_string(FP32_MODEL_FILE)}\n{rest}"
    atomic_write(served.parent.parent / "configs" / "gpu.pbtxt", gpu.encode())


def write_record(repo_dir: Path, model_name: str, record: dict[str, object]) -> dict[str, object]:
    atomic_write(serving_record_path(repo_dir, model_name), (json.dumps(record, indent=2) + "\n").encode())
    return record


def read_record(repo_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> dict[str, object] | None:
    """The serving record, or None for a repository that serves its FP32 export unmeasured."""
    path = serving_record_path(repo_dir, model_name)
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orbithash.export.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--data", type=Path, default=None,
                        help="the model's training data (default: UC Merced from the data dir, 80/20 split, seed 0)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=sorted(BUILDERS))
    parser.add_argument("--tolerance", type=float, default=MAP_TOLERANCE, help="largest mAP drop allowed")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    parser.add_argument("--fp32", action="store_true", help="serve the FP32 export, measure nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    split = load_split(args.data) if not args.fp32 else None
    record = serve_fastest(args.model_repository, split, model_name=args.model_name,
                           variants=args.variants, tolerance=args.tolerance, force_fp32=args.fp32,
                           calibration_images=args.calibration_images)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
