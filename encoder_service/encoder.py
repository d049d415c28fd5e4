"""The encoder's data plane, free of gRPC: decode, preprocess, infer in batches, pack."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from encoder_service.backends import InferenceBackend
from orbithash import InvalidInput, ResourceExhausted
from orbithash.bits import pack_signs
from orbithash.export.runtime import softmax
from orbithash.images import decode_image, resize_pixels
from orbithash.model_facts import ModelFacts


@dataclass(frozen=True)
class EncodedBatch:
    codes: np.ndarray          # (n, code_bytes) uint8
    u: np.ndarray              # (n, K) float32
    probabilities: np.ndarray  # (n, C) float32
    labels: np.ndarray         # (n,) int64


class EncoderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.images = Counter("orbithash_encoder_images", "Images encoded.", registry=registry)
        self.decode_seconds = Histogram("orbithash_encoder_decode_seconds",
                                        "Decode and preprocess time per request.", registry=registry)
        self.inference_seconds = Histogram("orbithash_encoder_inference_seconds",
                                           "Inference time per backend batch.", registry=registry)
        self.batch_size = Histogram("orbithash_encoder_batch_size", "Images per backend batch.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry)


class Encoder:
    def __init__(self, backend: InferenceBackend, max_batch: int, max_images: int,
                 metrics: EncoderMetrics, decode_threads: int = 4) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.max_images = max_images
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="infer")
        self._decode_pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    def _prepare(self, images: list[bytes]) -> np.ndarray:
        """Decode and resize on a thread pool (Pillow releases the GIL while it decodes)."""
        facts = self.facts
        out = np.empty((len(images), 3, facts.input_size, facts.input_size), np.uint8)

        def one(i: int) -> None:
            try:
                out[i] = resize_pixels(decode_image(images[i]), facts.input_size)
            except InvalidInput as exc:
                raise InvalidInput(f"image {i}: {exc}") from exc

        if len(images) == 1:
            one(0)
        else:
            list(self._decode_pool.map(one, range(len(images))))  # re-raises the first failure in order
        return out

    def _infer(self, chunk: np.ndarray, timeout: float | None) -> tuple[np.ndarray, np.ndarray]:
        self.metrics.batch_size.observe(len(chunk))
        with self.metrics.inference_seconds.time():
            return self.backend.infer(chunk, timeout)

    @property
    def facts(self) -> ModelFacts:
        return self.backend.facts

    def encode(self, images: list[bytes], timeout: float | None = None) -> EncodedBatch:
        """``timeout``: seconds left of the caller's deadline, passed on to the backend."""
        if not images:
            raise InvalidInput("no images given")
        if len(images) > self.max_images:
            raise ResourceExhausted(f"{len(images)} images in one call, limit {self.max_images}")
        with self.metrics.decode_seconds.time():
            batch = self._prepare(images)
        chunks = [batch[i:i + self.max_batch] for i in range(0, len(batch), self.max_batch)]
        # Chunks go out concurrently so Triton's dynamic batcher can run them back to back.
        if len(chunks) == 1:
            results = [self._infer(chunks[0], timeout)]
        else:
            results = list(self._pool.map(lambda c: self._infer(c, timeout), chunks))
        u = np.concatenate([r[0] for r in results])
        probs = softmax(np.concatenate([r[1] for r in results]).astype(np.float64)).astype(np.float32)
        self.metrics.images.inc(len(images))
        return EncodedBatch(pack_signs(u), u, probs, probs.argmax(axis=1))
