"""Train one of the papers' networks from scratch on decoded pixels (DSH's net on 32×32 CIFAR-10).

Unlike ``orbithash.training.finetune`` nothing is frozen, so nothing can be cached but the decoded pixels:
every image is decoded and resized once, exactly as the encoder service does, and kept as a
uint8 N×3×S×S array on disk. Each step augments a batch (random crop from a zero-padded copy,
horizontal flip), normalises it with the training images' per-channel statistics (which the
exported model then carries in its facts) and takes one AdamW step with a one-cycle schedule.
Seeds, checkpoints and resume behave as in ``orbithash.training.finetune``: the batch order and
augmentation come from a numpy generator whose state is checkpointed.

The classifier on u is always trained. When the loss has no classification term (DSH, DPSH:
pure hashing) it reads u detached, so it cannot shape the codes, yet the served model still predicts a class.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from orbithash import InvalidInput
from orbithash.bits import pack_signs
from orbithash.data import ImageRecord, Split
from orbithash.evaluation.metrics import accuracy, mean_average_precision
from orbithash.export.onnx_export import PixelNormalise
from orbithash.images import decode_image, resize_pixels
from orbithash.losses import BaseHashLoss, DSHLoss
from orbithash.model_facts import ModelFacts
from orbithash.models import VGGF, AlexNetSPP, DSHNet, HashNet
from orbithash.training.finetune import TrainResult, _Checkpoint, default_cache_dir

log = logging.getLogger(__name__)

PIXEL_FORMAT = 1  # bump when the cached pixels' meaning changes
ENCODE_BATCH = 512

# name → (constructor taking the input size, default input size)
SCRATCH_BACKBONES: dict[str, tuple[Callable[[int], nn.Module], int]] = {
    "dsh-net": (lambda size: DSHNet(size), 32),
    "alexnet-spp": (lambda size: AlexNetSPP(), 224),
    "vgg-f": (lambda size: VGGF(), 224),
}


@dataclass(frozen=True)
class ScratchConfig:
    """Hyper-parameters of a from-scratch fit; ``input_size = 0`` takes the backbone's own.

    Defaults: DSH's net on CIFAR-10. The paper trains with Caffe SGD for 150 000 iterations of
    batch 200 (600 epochs); AdamW with a one-cycle schedule and crop/flip augmentation gets
    there in tens of epochs on a 2-core CPU (≈ 14 batches of 128 per second, ≈ 28 s per 50 000
    images, channels-last; docs/results.md).
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    input_size: int = 0
    crop_padding: int = 4
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.crop_padding < 0 or self.input_size < 0:
            raise ValueError(f"invalid scratch config: {self}")


def make_backbone(name: str, input_size: int = 0) -> tuple[nn.Module, int]:
    """A fresh (randomly initialised) network by name and the input size it runs at."""
    if name not in SCRATCH_BACKBONES:
        raise ValueError(f"backbone {name!r} is not one of {', '.join(SCRATCH_BACKBONES)}")
    build, default_size = SCRATCH_BACKBONES[name]
    size = input_size or default_size
    return build(size), size


def _pixels_key(records: Sequence[ImageRecord], size: int) -> str:
    h = hashlib.sha256(repr((PIXEL_FORMAT, size, len(records))).encode())
    for r in records:
        h.update(f"{r.id}:{r.label}:{len(r.data)}:".encode())
        h.update(hashlib.sha256(r.data).digest())
    return h.hexdigest()[:16]


def decoded_pixels(records: Sequence[ImageRecord], size: int, *, cache_dir: Path | None = None,
                   progress: bool = True, desc: str = "decode") -> np.ndarray:
    """N×3×S×S uint8 pixels of ``records`` as served (decode + bilinear resize), cached on disk."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"pixels-{size}-{len(records)}-{_pixels_key(records, size)}.npy"
    if path.exists():
        return np.load(path)
    out = np.empty((len(records), 3, size, size), np.uint8)
    for i, record in enumerate(tqdm(records, desc=desc, unit="img", disable=not progress, mininterval=1.0)):
        try:
            out[i] = resize_pixels(decode_image(record.data), size)
        except InvalidInput as exc:
            raise InvalidInput(f"{record.id}: {exc}") from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
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
    """Train ``model`` (freshly initialised under ``seed``) on uint8 ``pixels`` in place and return it."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(memory_format=torch.channels_last)
    norm = PixelNormalise(facts.mean, facts.std)
    yt = torch.from_numpy(np.asarray(labels, np.int64))
    hashing_params = [p for n, p in model.named_parameters() if not n.startswith("head.classifier.")]
    opt = torch.optim.AdamW([{"params": hashing_params}, {"params": model.head.classifier.parameters()}],
                            lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(pixels))
    per_epoch = len(pixels) // batch  # full batches only
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(1, config.epochs * per_epoch))
    fingerprint = _fingerprint(pixels, labels, model, facts, config, loss, seed)
    saved = _Checkpoint(checkpoint, lambda: fingerprint, {"model": model}, opt, sched, rng)
    first_epoch = saved.resume("scratch")
    model.train()
    with tqdm(total=config.epochs * per_epoch, initial=first_epoch * per_epoch, desc="train", unit="batch",
              disable=not progress) as bar:
        for epoch in range(first_epoch, config.epochs):
            order = rng.permutation(len(pixels))
            for step in range(per_epoch):
                idx = np.sort(order[step * batch:(step + 1) * batch])
                x = norm(torch.from_numpy(augment(pixels[idx], rng, config.crop_padding, config.hflip)))
                x = x.contiguous(memory_format=torch.channels_last)
                features = model.backbone(x)
                u = model.head.hash(features)
                value = loss(u, yt[idx], model.head.classifier(u))
                if not loss.trains_classifier:  # pure hashing loss: the classifier learns from u, never shapes it
                    value = value + F.cross_entropy(model.head.classifier(u.detach()), yt[idx])
                opt.zero_grad()
                value.backward()
                opt.step()
                sched.step()
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{value.item():.3f}")
            saved.save(epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    model.eval()
    return model.to(memory_format=torch.contiguous_format)


def _fingerprint(pixels: np.ndarray, labels: np.ndarray, model: HashNet, facts: ModelFacts,
                 config: ScratchConfig, loss: BaseHashLoss, seed: int) -> str:
    params = sorted((k, v) for k, v in vars(loss).items() if isinstance(v, int | float | str | None))
    shapes = [tuple(p.shape) for p in model.parameters()]
    h = hashlib.sha256(repr((pixels.shape, shapes, facts.mean, facts.std, config, seed, type(loss).__name__,
                             params)).encode())
    h.update(np.ascontiguousarray(pixels[:: max(1, len(pixels) // 256)]).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()[:16]


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
        q_labels = split.labels("queries")
        metrics = {"map": mean_average_precision(pack_signs(u_q), q_labels, pack_signs(u_db),
                                                 split.labels("database"), bits=bits),
                   "accuracy": accuracy(logits_q, q_labels)}
    log.info("trained %s from scratch, %d bits, on %s: %s", backbone, bits, split.name, metrics)
    return TrainResult(model, facts, metrics)

