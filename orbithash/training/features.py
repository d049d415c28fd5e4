"""Backbone activations of a split, computed once with ONNX Runtime and cached on disk.

Most of the pretrained backbone (ImageNet EfficientNet-Lite0) stays frozen during training, so
its output is computed once per dataset, with ONNX Runtime (several times faster than torch on
CPU), and cached; flipped and rotated copies of each training image (``orbithash.training.views``)
are cached beside them as cheap augmentation. Images pass through ``orbithash.images`` exactly as
when served, so the cached features are what the exported network computes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from orbithash.data import ImageRecord, Split
from orbithash.export.onnx_export import onnx_bytes
from orbithash.files import atomic_write
from orbithash.images import decode_pixels, normalise
from orbithash.model_facts import ModelFacts
from orbithash.models import BACKBONE_INPUT_SIZE, BACKBONE_MEAN, BACKBONE_NAME, BACKBONE_STD, Backbone
from orbithash.training.cache import default_cache_dir, records_key
from orbithash.training.views import VIEWS

log = logging.getLogger(__name__)

EXTRACT_BATCH = 8  # ONNX Runtime on 2 cores is fastest at 4–8 images per run
FEATURE_FORMAT = 1  # bump when the cached features' meaning changes


@dataclass(frozen=True)
class Features:
    """Backbone outputs: the training images under every view (``orig`` always among them), the
    queries unaugmented and, when it is not the training set, the database unaugmented."""

    training: dict[str, np.ndarray]
    queries: np.ndarray
    separate_database: np.ndarray | None = None

    @property
    def database(self) -> np.ndarray:
        return self.training["orig"] if self.separate_database is None else self.separate_database


def backbone_facts(split: Split, bits: int, name: str = "orbithash", method: str = "dhcnn") -> ModelFacts:
    """Facts of a pretrained-backbone model on this split before export gives it its version."""
    return ModelFacts(name=name, version="pending", bits=bits, class_names=split.class_names,
                      input_size=BACKBONE_INPUT_SIZE, mean=BACKBONE_MEAN, std=BACKBONE_STD,
                      method=method, backbone=BACKBONE_NAME)


class OnnxBackbone:
    """The frozen backbone (or trunk) run by ONNX Runtime with two intra-op threads."""

    def __init__(self, backbone: torch.nn.Module, input_size: int, threads: int = 2) -> None:
        model = onnx_bytes(backbone, input_size, ["x"], ["f"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]


def extract_features(records: Sequence[ImageRecord], facts: ModelFacts, backbone: OnnxBackbone,
                     views: Sequence[str] = ("orig",), *, progress: bool = True,
                     desc: str = "features", shape: tuple[int, ...] = (Backbone.feature_dim,),
                     dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Backbone outputs (``shape`` each) of every record under every view, decoded as the encoder
    service does, stored as ``dtype``."""
    chunks: dict[str, list[np.ndarray]] = {v: [np.empty((0, *shape), dtype)] for v in views}
    with tqdm(total=len(records) * len(views), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(records), EXTRACT_BATCH):
            batch = records[start:start + EXTRACT_BATCH]
            x = np.stack([normalise(decode_pixels(r.data, facts.input_size), facts) for r in batch])
            for v in views:
                chunks[v].append(backbone(VIEWS[v](x)).astype(dtype, copy=False))
                bar.update(len(batch))
    return {v: np.concatenate(c) for v, c in chunks.items()}


def _cache_key(split: Split, facts: ModelFacts, views: Sequence[str], tail_blocks: int) -> str:
    how = (FEATURE_FORMAT, facts.backbone, facts.input_size, facts.mean, facts.std, tuple(views))
    # tail_blocks 0 (pooled features) keeps the key it always had, so those caches stay valid.
    parts = [split.database, split.queries] + ([] if split.train is None else [split.train])
    return records_key(how if not tail_blocks else (*how, "trunk", tail_blocks), *parts)


def cached_features(split: Split, facts: ModelFacts, views: Sequence[str], *, cache_dir: Path | None = None,
                    progress: bool = True, tail_blocks: int = 0) -> Features:
    """Features of the split from the cache, extracting and storing them when absent.

    ``tail_blocks = 0``: pooled N×1280 float32 features of the whole frozen backbone. Otherwise
    the trunk's activations (the input of the last ``tail_blocks`` MBConv blocks, N×C×7×7) as
    float16, for ``fit_tail``. The training images are extracted under every view (``orig``
    added when missing), queries and a separate database unaugmented. The key hashes every
    image's bytes and label plus the backbone, preprocessing, views and cut.
    """
    views = tuple(dict.fromkeys(("orig", *views)))
    cache_dir = cache_dir or default_cache_dir()
    kind = "features" if not tail_blocks else f"trunk{tail_blocks}"
    path = cache_dir / f"{kind}-{split.name}-{len(split.database)}-{len(split.queries)}-" \
                       f"{_cache_key(split, facts, views, tail_blocks)}.npz"
    if path.exists():
        with np.load(path) as z:
            return Features({v: z[f"db_{v}"] for v in views}, z["queries"],
                            z["database"] if "database" in z.files else None)
    if tail_blocks:
        trunk, _ = Backbone().split(tail_blocks)
        with torch.no_grad():
            shape = tuple(trunk(torch.zeros(1, 3, facts.input_size, facts.input_size)).shape[1:])
        backbone, dtype = OnnxBackbone(trunk, facts.input_size), np.float16
    else:
        backbone, shape, dtype = OnnxBackbone(Backbone(), facts.input_size), (Backbone.feature_dim,), np.float32
    start = time.perf_counter()

    def extract(records: Sequence[ImageRecord], which: Sequence[str], desc: str) -> dict[str, np.ndarray]:
        return extract_features(records, facts, backbone, which, progress=progress, desc=desc, shape=shape,
                                dtype=dtype)

    training = extract(split.training, views, "training" if split.train is not None else "database")
    queries = extract(split.queries, ("orig",), "queries")["orig"]
    extra = {} if split.train is None else {"database": extract(split.database, ("orig",), "database")["orig"]}
    log.info("extracted %d feature vectors in %.1f s", sum(len(a) for a in training.values()) + len(queries)
             + sum(len(a) for a in extra.values()), time.perf_counter() - start)
    atomic_write(path, lambda tmp: np.savez(tmp, queries=queries, **{f"db_{v}": a for v, a in training.items()},
                                            **extra), suffix=".npz")
    return Features(training, queries, extra.get("database"))
