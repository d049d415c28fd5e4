"""A constant inference backend for encoder unit tests that exercise decoding, budgets and thumbnails
(pure logic around the model; the model itself is tested against ONNX Runtime and Triton)."""

from __future__ import annotations

import numpy as np

from orbithash.model_facts import ModelFacts


def facts(input_size: int) -> ModelFacts:
    """16-bit codes, two classes, the given square input."""
    return ModelFacts("m", "v1", 16, ("a", "b"), input_size, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))


class ZeroBackend:
    """Every image gets u = 1 (all bits set) and equal logits."""

    def __init__(self, model: ModelFacts) -> None:
        self.facts = model

    def infer(self, batch: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return np.ones((len(batch), 16), np.float32), np.zeros((len(batch), 2), np.float32)

    def ready(self) -> bool:
        return True
