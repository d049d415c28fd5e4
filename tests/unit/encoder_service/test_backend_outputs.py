"""What the model answers is checked before it becomes a code: a backend (Triton, a model file)
that returns NaN, too few rows or outputs of the wrong width is a server fault, said as one,
never an item stored with a made-up code (no gRPC)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from support.encoders import ZeroBackend, facts

from encoder_service.encoder import Encoder, EncoderMetrics
from orbithash import TritonFailure

FACTS = facts(32)
Outputs = Callable[[int], tuple[np.ndarray, np.ndarray]]


class Answering(ZeroBackend):
    """A backend whose outputs for n images are ``outputs(n)``."""

    def __init__(self, outputs: Outputs) -> None:
        super().__init__(FACTS)
        self.outputs = outputs

    def infer(self, batch: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.outputs(len(batch))


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (90, 30, 200)).save(buf, "PNG")
    return buf.getvalue()


def nan_in_row(n: int, width: int) -> np.ndarray:
    out = np.ones((n, width), np.float32)
    out[n - 1, 0] = np.nan
    return out


@pytest.mark.parametrize(("outputs", "message"), [
    (lambda n: (nan_in_row(n, 16), np.zeros((n, 2), np.float32)), r"not finite .* image 1"),
    (lambda n: (np.ones((n, 16), np.float32), np.full((n, 2), np.inf, np.float32)), r"not finite .* image 0"),
    (lambda n: (np.ones((n, 32), np.float32), np.zeros((n, 2), np.float32)),
     r"\(2, 32\) code values and \(2, 2\) logits for 2 images; the model's facts say \(2, 16\) and \(2, 2\)"),
    (lambda n: (np.ones((n, 16), np.float32), np.zeros((n, 3), np.float32)), r"\(2, 3\) logits"),
    (lambda n: (np.ones((n - 1, 16), np.float32), np.zeros((n - 1, 2), np.float32)), r"\(1, 16\) code values"),
    (lambda n: (None, np.zeros((n, 2), np.float32)), "answered no code values"),
])
def test_a_model_answer_that_cannot_be_a_code_is_a_server_fault(outputs: Outputs, message: str) -> None:
    encoder = Encoder(Answering(outputs), 4, 16, EncoderMetrics(CollectorRegistry()), 2)
    with pytest.raises(TritonFailure, match=message):
        encoder.encode([png(), png()])


def test_a_sound_answer_still_encodes() -> None:
    encoder = Encoder(Answering(lambda n: (np.ones((n, 16), np.float32), np.zeros((n, 2), np.float32))), 4, 16,
                      EncoderMetrics(CollectorRegistry()), 2)
    assert encoder.encode([png(), png()]).codes.shape == (2, 2)
