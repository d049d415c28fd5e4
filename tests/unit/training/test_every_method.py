"""Every hashing method exports a classifier that was trained: the served class is never noise.

A pure hashing loss (DSH, DPSH) has no classification term, yet the served model still predicts a
class; the training loop fits that classifier on detached u. Checked on real UC Merced images
through the exported ONNX model, exactly as the encoder serves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orbithash.data import Split
from orbithash.export.runtime import ExportedModel
from orbithash.losses import LOSSES, make_loss
from orbithash.training.config import HeadConfig
from orbithash.training.finetune import train_and_export

# The frozen backbone (pooled features cached once for all methods) and a short head fit.
CONFIG = HeadConfig(tail_blocks=0, views=("orig",), epochs=100, batch_size=64)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_the_exported_classifier_of_every_method_beats_chance(method: str, ucm_subset: Split, cache: Path,
                                                              tmp_path: Path) -> None:
    facts = train_and_export(ucm_subset, bits=32, repo_dir=tmp_path, model_name=method, config=CONFIG,
                             method=method, loss=make_loss(method), cache_dir=cache, progress=False)
    served = ExportedModel(tmp_path / method / "1" / "model.onnx")
    assert served.facts.version == facts.version and served.facts.method == method
    _, probs = served.encode([r.data for r in ucm_subset.queries])
    accuracy = float(np.mean(probs.argmax(axis=1) == ucm_subset.labels("queries")))
    chance = 1 / len(ucm_subset.class_names)
    assert accuracy > max(0.5, 8 * chance), (method, accuracy)
