"""Train one of the papers' networks from scratch on decoded pixels (DSH's net on 32×32 CIFAR-10).

Unlike ``orbithash.training.finetune`` nothing is frozen, so nothing can be cached but the decoded
pixels: every image is decoded and resized once, exactly as the encoder service does, and kept as
a uint8 N×3×S×S array on disk. The fit runs the one loop of ``orbithash.training.loop``; what it
supplies is the whole network's parameters and how a batch of pixels becomes features: random
crop from a zero-padded copy, horizontal flip, normalisation with the training images'
per-channel statistics (which the exported model then carries in its facts), the backbone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from orbithash import InvalidInput
from orbithash.data import ImageRecord, Split
from orbithash.export.onnx_export import PixelNormalise
from orbithash.files import atomic_write
from orbithash.images import decode_pixels
from orbithash.losses import BaseHashLoss, DSHLoss
from orbithash.model_facts import ModelFacts
from orbithash.models import VGGF, AlexNetSPP, DSHNet, HashNet
from orbithash.training.cache import default_cache_dir, records_key
from orbithash.training.config import ScratchConfig
from orbithash.training.loop import ParamGroup, fit
from orbithash.training.result import TrainResult, score

log = logging.getLogger(__name__)

PIXEL_FORMAT = 1  # bump when the cached pixels' meaning changes
ENCODE_BATCH = 512

# name → (constructor taking the input size, default input size); the names are
# orbithash.training.config.SCRATCH_BACKBONES (torch-free, for config validation).
SCRATCH_NETWORKS: dict[str, tuple[Callable[[int], nn.Module], int]] = {
    "dsh-net": (lambda size: DSHNet(size), 32),
    "alexnet-spp": (lambda size: AlexNetSPP(), 224),
    "vgg-f": (lambda size: VGGF(), 224),
}


def make_backbone(name: str, input_size: int = 0) -> tuple[nn.Module, int]:
    """A fresh (randomly initialised) network by name and the input size it runs at."""
    if name not in SCRATCH_NETWORKS:
        raise ValueError(f"backbone {name!r} is not one of {', '.join(SCRATCH_NETWORKS)}")
    build, default_size = SCRATCH_NETWORKS[name]
    size = input_size or default_size
    return build(size), size


def decoded_pixels(records: Sequence[ImageRecord], size: int, *, cache_dir: Path | None = None,
                   progress: bool = True, desc: str = "decode") -> np.ndarray:
    """N×3×S×S uint8 pixels of ``records`` as served (decode + bilinear resize), cached on disk."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"pixels-{size}-{len(records)}-{records_key((PIXEL_FORMAT, size), records)}.npy"
    if path.exists():
        return np.load(path)
    out = np.empty((len(records), 3, size, size), np.uint8)
    for i, record in enumerate(tqdm(records, desc=desc, unit="img", disable=not progress, mininterval=1.0)):
        try:
            out[i] = decode_pixels(record.data, size)  # exactly what the encoder serves
        except InvalidInput as exc:
            raise InvalidInput(f"{record.id}: {exc}") from exc
    atomic_write(path, lambda tmp: np.save(tmp, out), suffix=".npy")
    return out


def channel_stats(pixels: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of uint8 N×3×S×S pixels, rounded to 0.01 (they go into the facts)."""
    x = pixels.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    mean = tuple(round(float(m), 2) for m in x.mean(axis=1))
    std = tuple(round(max(float(s), 1.0), 2) for s in x.std(axis=1))
    return mean, std  # type: ignore[return-value]


def augment(pixels: np.ndarray, rng: np.random.Generator, padding: int, hflip: bool) -> np.ndarray:
    """Random crop of each image from its zero-padded copy, then a random horizontal flip."""
    n, c, h, w = pixels.shape
    out = pixels
    if padding:
        padded = np.zeros((n, c, h + 2 * padding, w + 2 * padding), pixels.dtype)
        padded[:, :, padding:padding + h, padding:padding + w] = pixels
        dy, dx = rng.integers(0, 2 * padding + 1, (2, n))
        out = np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if hflip:
        flip = rng.random(n) < 0.5
        out = np.where(flip[:, None, None, None], out[..., ::-1], out)
    return out


def fit_scratch(pixels: np.ndarray, labels: np.ndarray, model: HashNet, facts: ModelFacts, config: ScratchConfig,
                loss: BaseHashLoss, *, seed: int = 0, progress: bool = False, checkpoint: Path | None = None,
                on_epoch_end: Callable[[int], None] | None = None) -> HashNet:
    """Train ``model`` (freshly initialised by the caller) on uint8 ``pixels`` in place and return it.

    ``checkpoint`` and ``on_epoch_end`` behave as in ``orbithash.training.loop.fit``.
    """
    model.to(memory_format=torch.channels_last)  # faster convolutions on CPU
    norm = PixelNormalise(facts.mean, facts.std)

    def batch_features(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x = norm(torch.from_numpy(augment(batch, rng, config.crop_padding, config.hflip)))
        return model.backbone(x.contiguous(memory_format=torch.channels_last))

    fit(pixels, labels, model.head, batch_features, loss, modules={"model": model},
        groups=[ParamGroup(model.parameters(), config.lr)], epochs=config.epochs, batch_size=config.batch_size,
        weight_decay=config.weight_decay, seed=seed, settings=(config, facts.mean, facts.std),
        checkpoint=checkpoint, on_epoch_end=on_epoch_end, progress=progress, desc="train")
    return model.to(memory_format=torch.contiguous_format)


def encode_pixels(model: HashNet, facts: ModelFacts, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, logits) of uint8 pixels through the model in eval mode."""
    norm = PixelNormalise(facts.mean, facts.std)
    model.eval()
    us, logits = [np.empty((0, model.bits), np.float32)], [np.empty((0, model.head.num_classes), np.float32)]
    with torch.no_grad():
        for start in range(0, len(pixels), ENCODE_BATCH):
            u, lg = model(norm(torch.from_numpy(pixels[start:start + ENCODE_BATCH])))
            us.append(u.numpy())
            logits.append(lg.numpy())
    return np.concatenate(us), np.concatenate(logits)


def train_scratch(split: Split, *, backbone: str = "dsh-net", bits: int = 48, seed: int = 0,
                  config: ScratchConfig | None = None, loss: BaseHashLoss | None = None, method: str = "dsh",
                  cache_dir: Path | None = None, progress: bool = True, checkpoint: Path | None = None,
                  name: str = "orbithash") -> TrainResult:
    """Decode, fit ``backbone`` + hash head from scratch on the split's training images, score it."""
    config = config or ScratchConfig()
    loss = loss if loss is not None else DSHLoss()
    torch.manual_seed(seed)
    net, size = make_backbone(backbone, config.input_size)
    model = HashNet(bits, len(split.class_names), backbone=net)
    train_pixels = decoded_pixels(split.training, size, cache_dir=cache_dir, progress=progress, desc="decode train")
    mean, std = channel_stats(train_pixels)
    facts = ModelFacts(name=name, version="pending", bits=bits, class_names=split.class_names, input_size=size,
                       mean=mean, std=std, method=method, backbone=backbone)
    fit_scratch(train_pixels, split.labels("training"), model, facts, config, loss, seed=seed,
                progress=progress, checkpoint=checkpoint)
    metrics: dict[str, float] = {}
    if split.queries:
        db_pixels = train_pixels if split.train is None else decoded_pixels(
            split.database, size, cache_dir=cache_dir, progress=progress, desc="decode database")
        q_pixels = decoded_pixels(split.queries, size, cache_dir=cache_dir, progress=progress, desc="decode queries")
        u_db, _ = encode_pixels(model, facts, db_pixels)
        u_q, logits_q = encode_pixels(model, facts, q_pixels)
        metrics = score(u_db, split.labels("database"), u_q, logits_q, split.labels("queries"))
    log.info("trained %s from scratch, %d bits, on %s: %s", backbone, bits, split.name, metrics)
    return TrainResult(model, facts, metrics)
