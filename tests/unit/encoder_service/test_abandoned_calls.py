"""A call whose caller is gone stops costing work (no gRPC): no backend batch is sent once the caller
has cancelled or its deadline has passed. The decode side is tested against a real server in
tests/integration/encoder_service."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from support.encoders import ZeroBackend, facts

from encoder_service.encoder import Encoder, EncoderMetrics
from orbithash import Cancelled, DeadlineExceeded

FACTS = facts(8)
IMAGES = 12  # max_batch 1: twelve backend batches, four at a time on the encoder's inference pool


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (90, 30, 200)).save(buf, "PNG")
    return buf.getvalue()


class Slow(ZeroBackend):
    """Each batch takes 0.2 s; the first one calls ``on_first`` (the caller leaves meanwhile)."""

    def __init__(self, on_first: threading.Event) -> None:
        super().__init__(FACTS)
        self.on_first = on_first
        self.sent = 0
        self._lock = threading.Lock()

    def infer(self, batch: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.sent += 1
        self.on_first.set()
        time.sleep(0.2)
        return super().infer(batch, timeout)


def test_no_backend_batch_is_sent_after_the_caller_cancelled() -> None:
    started = threading.Event()
    backend = Slow(started)
    encoder = Encoder(backend, 1, IMAGES, EncoderMetrics(CollectorRegistry()), 2)
    with pytest.raises(Cancelled, match="went away before a batch of 1 images was sent to the model"):
        encoder.encode([png()] * IMAGES, active=lambda: not started.is_set())
    assert backend.sent <= 4, f"{backend.sent} of {IMAGES} batches sent after the caller cancelled"


def test_no_backend_batch_is_sent_after_the_deadline() -> None:
    backend = Slow(threading.Event())
    encoder = Encoder(backend, 1, IMAGES, EncoderMetrics(CollectorRegistry()), 2)
    with pytest.raises(DeadlineExceeded, match="deadline passed before"):
        encoder.encode([png()] * IMAGES, timeout=0.1)
    assert backend.sent <= 4, f"{backend.sent} of {IMAGES} batches sent after the deadline"


def test_a_caller_still_waiting_gets_every_image() -> None:
    encoder = Encoder(ZeroBackend(FACTS), 1, IMAGES, EncoderMetrics(CollectorRegistry()), 2)
    assert len(encoder.encode([png()] * IMAGES, timeout=30, active=lambda: True).codes) == IMAGES
