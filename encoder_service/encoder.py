"""The encoder's data plane, free of gRPC: decode, preprocess, infer in batches, pack."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from encoder_service.backends import InferenceBackend
from encoder_service.budget import MemoryBudget
from encoder_service.thumbnails import check_thumbnail_size, thumbnail
from orbithash import InvalidInput, ResourceExhausted, TritonFailure
from orbithash.bits import pack_signs
from orbithash.export.runtime import softmax
from orbithash.images import (
    DEFAULT_LIMITS,
    MB,
    DecodeLimits,
    ImageHeader,
    check_encoded_size,
    check_limits,
    decode_checked,
    mpx,
    read_header,
)
from orbithash.model_facts import ModelFacts


@dataclass(frozen=True)
class EncodedBatch:
    codes: np.ndarray          # (n, code_bytes) uint8
    u: np.ndarray              # (n, K) float32
    probabilities: np.ndarray  # (n, C) float32
    labels: np.ndarray         # (n,) int64
    thumbnails: tuple[bytes, ...] = ()  # JPEG per image, when a thumbnail size was asked for


@dataclass(frozen=True)
class DecodePolicy:
    """Bounds on decoding: per image (on its header), per request, and for the whole process.

    ``image``: per-image limits (INVALID_ARGUMENT); ``max_request_pixels``: all images of one call
    together (RESOURCE_EXHAUSTED); ``memory_bytes``: estimated decode memory of every image being
    decoded at once, across requests; ``wait_s``: how long an image waits for that memory before
    its request gets RESOURCE_EXHAUSTED.
    """

    image: DecodeLimits = DEFAULT_LIMITS
    max_request_pixels: int = 120_000_000
    memory_bytes: int = 1000 * MB
    wait_s: float = 2.0


class EncoderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.images = Counter("orbithash_encoder_images", "Images encoded.", registry=registry)
        self.decode_seconds = Histogram("orbithash_encoder_decode_seconds",
                                        "Decode and preprocess time per request.", registry=registry)
        self.inference_seconds = Histogram("orbithash_encoder_inference_seconds",
                                           "Inference time per backend batch.", registry=registry)
        self.batch_size = Histogram("orbithash_encoder_batch_size", "Images per backend batch.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry)
        self.decode_reserved = Gauge("orbithash_encoder_decode_reserved_bytes",
                                     "Estimated decode memory held by images being decoded now.", registry=registry)
        self.refusals = Counter("orbithash_encoder_decode_refusals",
                                "Requests refused before decoding, by the bound they hit.", ["bound"],
                                registry=registry)


class Encoder:
    def __init__(self, backend: InferenceBackend, max_batch: int, max_images: int,
                 metrics: EncoderMetrics, decode_threads: int = 4, decode: DecodePolicy | None = None) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.max_images = max_images
        self.metrics = metrics
        self.decode = decode or DecodePolicy()
        self.memory = MemoryBudget(self.decode.memory_bytes)
        metrics.decode_reserved.set_function(lambda: self.memory.used)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="infer")
        self._decode_pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    def _headers(self, images: list[bytes]) -> list[ImageHeader]:
        """Every image's header checked against the per-image limits and the request's pixel budget."""
        headers = []
        for i, data in enumerate(images):
            try:
                check_encoded_size(len(data), self.decode.image)
                header = read_header(data, self.facts.input_size)
                check_limits(header, self.decode.image)
            except InvalidInput as exc:
                self.metrics.refusals.labels("image").inc()
                raise InvalidInput(f"image {i}: {exc}") from exc
            headers.append(header)
        total = sum(h.pixels for h in headers)
        if total > self.decode.max_request_pixels:
            self.metrics.refusals.labels("request").inc()
            raise ResourceExhausted(
                f"{len(images)} images of {mpx(total)} in all are over the per-request budget of "
                f"{mpx(self.decode.max_request_pixels)}; send them in smaller requests, or downscale them")
        return headers

    def _prepare(self, images: list[bytes], deadline: float | None,
                 thumbnail_size: int = 0) -> tuple[np.ndarray, list[bytes]]:
        """Check every header first, then decode on a thread pool (Pillow and zlib release the GIL),
        each image holding its estimated decode memory from the process-wide budget while it decodes.
        With ``thumbnail_size``, each decoded image also gives a JPEG thumbnail (see ``thumbnails``)."""
        headers = self._headers(images)
        size = self.facts.input_size
        out = np.empty((len(images), 3, size, size), np.uint8)
        thumbs = [b""] * len(images) if thumbnail_size else []

        def one(i: int) -> None:
            wait = self.decode.wait_s if deadline is None else min(self.decode.wait_s, deadline - time.monotonic())
            header = headers[i]
            try:
                with self.memory.reserve(header.decode_bytes, wait, f"image {i} ({header.describe()})"):
                    out[i] = decode_checked(images[i], header)
            except InvalidInput as exc:
                raise InvalidInput(f"image {i}: {exc}") from exc
            except ResourceExhausted:
                self.metrics.refusals.labels("memory").inc()
                raise
            if thumbnail_size:
                thumbs[i] = thumbnail(out[i], header.width, header.height, thumbnail_size)

        if len(images) == 1:
            one(0)
            return out, thumbs
        futures = [self._decode_pool.submit(one, i) for i in range(len(images))]
        try:
            for future in futures:  # re-raises the first failure in order
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()  # the images not started yet are not decoded for nothing
            raise
        return out, thumbs

    def _infer(self, chunk: np.ndarray, timeout: float | None) -> tuple[np.ndarray, np.ndarray]:
        self.metrics.batch_size.observe(len(chunk))
        with self.metrics.inference_seconds.time():
            u, logits = self.backend.infer(chunk, timeout)
        return self._checked(u, logits, len(chunk))

    def _checked(self, u: np.ndarray | None, logits: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The backend's outputs, if they can be ``n`` codes and class scores: a model or server that
        answers otherwise is a server fault, never a code made up from what it sent."""
        for name, out in (("code values", u), ("logits", logits)):
            if out is None:
                raise TritonFailure(f"the model answered no {name} for {n} images")
        want_u, want_logits = (n, self.facts.bits), (n, len(self.facts.class_names))
        if np.shape(u) != want_u or np.shape(logits) != want_logits:
            raise TritonFailure(f"the model answered {np.shape(u)} code values and {np.shape(logits)} logits for "
                                f"{n} images; the model's facts say {want_u} and {want_logits} (is the served "
                                "model the one its facts describe?)")
        return u, logits

    @property
    def facts(self) -> ModelFacts:
        return self.backend.facts

    def encode(self, images: list[bytes], timeout: float | None = None, thumbnail_size: int = 0) -> EncodedBatch:
        """``timeout``: seconds left of the caller's deadline, passed on to the backend;
        ``thumbnail_size`` > 0: also a JPEG thumbnail of each image, that many pixels on its longer side."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not images:
            raise InvalidInput("no images given")
        if len(images) > self.max_images:
            raise ResourceExhausted(f"{len(images)} images in one call, limit {self.max_images}")
        check_thumbnail_size(thumbnail_size)
        with self.metrics.decode_seconds.time():
            batch, thumbs = self._prepare(images, deadline, thumbnail_size)
        chunks = [batch[i:i + self.max_batch] for i in range(0, len(batch), self.max_batch)]
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        # Chunks go out concurrently so Triton's dynamic batcher can run them back to back.
        if len(chunks) == 1:
            results = [self._infer(chunks[0], left)]
        else:
            results = list(self._pool.map(lambda c: self._infer(c, left), chunks))
        u = np.concatenate([r[0] for r in results])
        logits = np.concatenate([r[1] for r in results])
        finite = np.isfinite(u).all(axis=1) & np.isfinite(logits).all(axis=1)
        if not finite.all():
            raise TritonFailure(f"the model's output is not finite (NaN or inf) for image "
                                f"{int(np.argmin(finite))} of {len(images)}; no code was made from it")
        probs = softmax(logits.astype(np.float64)).astype(np.float32)
        self.metrics.images.inc(len(images))
        return EncodedBatch(pack_signs(u), u, probs, probs.argmax(axis=1), tuple(thumbs))
