"""The encoder's data plane, free of gRPC: decode, preprocess, infer in batches, pack."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from encoder_service.backends import InferenceBackend
from encoder_service.budget import MemoryBudget
from encoder_service.thumbnails import check_thumbnail_size, thumbnail
from orbithash import Cancelled, DeadlineExceeded, InvalidInput, ResourceExhausted, TritonFailure
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

# True while someone still waits for the answer (the servicer passes gRPC's ``context.is_active``).
Active = Callable[[], bool]


def _still_wanted(deadline: float | None, active: Active | None, before: str) -> None:
    """Raise when nobody will read the answer: work for a caller that is gone steals the CPU (decode)
    and the model (inference) from those still waiting."""
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"the caller's deadline passed before {before}")
    if active is not None and not active():
        raise Cancelled(f"the caller went away before {before}")


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
        self.decoded = Counter("orbithash_encoder_decoded_images",
                               "Images decoded, whether or not their request was then answered.", registry=registry)
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

    def _prepare(self, images: list[bytes], deadline: float | None, thumbnail_size: int = 0,
                 active: Active | None = None) -> tuple[np.ndarray, list[bytes]]:
        """Check every header first, then decode on a thread pool (Pillow and zlib release the GIL),
        each image holding its estimated decode memory from the process-wide budget while it decodes.
        No image starts once the deadline has passed or ``active`` says the caller is gone.
        With ``thumbnail_size``, each decoded image also gives a JPEG thumbnail (see ``thumbnails``)."""
        headers = self._headers(images)
        size = self.facts.input_size
        out = np.empty((len(images), 3, size, size), np.uint8)
        thumbs = [b""] * len(images) if thumbnail_size else []

        def one(i: int) -> None:
            _still_wanted(deadline, active, f"image {i} of {len(images)} was decoded")
            wait = self.decode.wait_s if deadline is None else min(self.decode.wait_s, deadline - time.monotonic())
            header = headers[i]
            try:
                with self.memory.reserve(header.decode_bytes, wait, f"image {i} ({header.describe()})"):
                    _still_wanted(deadline, active, f"image {i} of {len(images)} was decoded")  # after the wait
                    out[i] = decode_checked(images[i], header)
                self.metrics.decoded.inc()
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

    def _infer(self, chunk: np.ndarray, deadline: float | None,
               active: Active | None) -> tuple[np.ndarray, np.ndarray]:
        """One backend batch, sent only while its caller still waits, with what is left of its deadline."""
        _still_wanted(deadline, active, f"a batch of {len(chunk)} images was sent to the model")
        timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
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

    def encode(self, images: list[bytes], timeout: float | None = None, thumbnail_size: int = 0,
               active: Active | None = None) -> EncodedBatch:
        """``timeout``: seconds left of the caller's deadline, passed on to the backend;
        ``thumbnail_size`` > 0: also a JPEG thumbnail of each image, that many pixels on its longer side;
        ``active``: False once the caller has gone (cancelled). Neither a decode nor a backend batch
        starts after the deadline or the caller has gone: DeadlineExceeded or Cancelled instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not images:
            raise InvalidInput("no images given")
        if len(images) > self.max_images:
            raise ResourceExhausted(f"{len(images)} images in one call, limit {self.max_images}")
        check_thumbnail_size(thumbnail_size)
        with self.metrics.decode_seconds.time():
            batch, thumbs = self._prepare(images, deadline, thumbnail_size, active)
        chunks = [batch[i:i + self.max_batch] for i in range(0, len(batch), self.max_batch)]
        # Chunks go out concurrently so Triton's dynamic batcher can run them back to back; a chunk
        # still queued when one fails is cancelled by map's iterator.
        if len(chunks) == 1:
            results = [self._infer(chunks[0], deadline, active)]
        else:
            results = list(self._pool.map(lambda c: self._infer(c, deadline, active), chunks))
        u = np.concatenate([r[0] for r in results])
        logits = np.concatenate([r[1] for r in results])
        finite = np.isfinite(u).all(axis=1) & np.isfinite(logits).all(axis=1)
        if not finite.all():
            raise TritonFailure(f"the model's output is not finite (NaN or inf) for image "
                                f"{int(np.argmin(finite))} of {len(images)}; no code was made from it")
        probs = softmax(logits.astype(np.float64)).astype(np.float32)
        self.metrics.images.inc(len(images))
        return EncodedBatch(pack_signs(u), u, probs, probs.argmax(axis=1), tuple(thumbs))
