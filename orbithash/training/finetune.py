"""Train a hashing network on the pretrained backbone's cached activations; export the whole network.

By default (``HeadConfig.tail_blocks = 1``) the cache (``orbithash.training.features``) holds the
input of EfficientNet-Lite0's last MBConv block, and that block + ``_conv_head`` + ``_bn1``
(BatchNorm statistics frozen) are fine-tuned together with the head u = W f + v → classifier
(``fit_tail``); with ``tail_blocks = 0`` the whole backbone is frozen, the cache holds pooled
features and only the head is fitted (``fit_head``, far cheaper: no convolution runs). Both
run the one loop of ``orbithash.training.loop`` with any loss of ``orbithash.losses`` (DHCNN by
default) and supply only what differs: the parameters that train and how a batch of cached
activations becomes pooled, standardised, dropped-out features. The exported model is one
network, trunk → tail → head, so serving needs nothing but the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from orbithash.data import Split
from orbithash.losses import BaseHashLoss, DHCNNLoss
from orbithash.model_facts import ModelFacts
from orbithash.models import Backbone, FineTunedBackbone, HashHead, HashNet, Tail
from orbithash.training.config import HeadConfig
from orbithash.training.features import Features, backbone_facts, cached_features
from orbithash.training.loop import ParamGroup, fit
from orbithash.training.result import TrainResult, export_trained, score

log = logging.getLogger(__name__)

ENCODE_BATCH = 256  # activations per forward pass when the tail only encodes

# Features and HeadConfig are named here too for callers that still import them from this module.
__all__ = ["Features", "HeadConfig", "encode_pooled", "fit_head", "fit_tail", "train", "train_and_export"]


def default_loss(config: HeadConfig) -> BaseHashLoss:
    """DHCNN with the config's θ scale, β and η: the loss when a caller names none."""
    return DHCNNLoss(theta_scale=config.theta_scale, beta=config.beta, eta=config.eta)


def fit_head(features: dict[str, np.ndarray], labels: np.ndarray, bits: int, num_classes: int,
             config: HeadConfig, *, seed: int = 0, progress: bool = False, loss: BaseHashLoss | None = None,
             checkpoint: Path | None = None, on_epoch_end: Callable[[int], None] | None = None) -> HashHead:
    """Fit the hash layer and classifier on pooled features of every view in ``config.views``.

    Features are standardised for the fit and the scaling folded back into W and v afterwards,
    so the exported hash layer still reads raw pooled features. ``checkpoint`` and
    ``on_epoch_end`` behave as in ``orbithash.training.loop.fit``.
    """
    loss = loss if loss is not None else default_loss(config)
    x = np.concatenate([features[v] for v in config.views]).astype(np.float32)
    y = np.tile(np.asarray(labels, np.int64), len(config.views))
    mean, scale = _standardisation(x)
    torch.manual_seed(seed)
    head = HashHead(x.shape[1], bits, num_classes)

    def batch_features(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        return _dropout(torch.from_numpy(batch), rng, config.feature_dropout)

    with _torch_threads(1):  # the matrices are small: a second thread costs more than it gives
        fit((x - mean) * scale, y, head, batch_features, loss, modules={"head": head},
            groups=[ParamGroup(head.parameters(), config.lr)], epochs=config.epochs,
            batch_size=config.batch_size, weight_decay=config.weight_decay, seed=seed, settings=config,
            checkpoint=checkpoint, on_epoch_end=on_epoch_end, progress=progress, desc="head")
    _fold_standardisation(head, torch.from_numpy(mean), torch.from_numpy(scale))
    return head


def fit_tail(activations: dict[str, np.ndarray], labels: np.ndarray, bits: int, num_classes: int,
             config: HeadConfig, *, seed: int = 0, progress: bool = False, loss: BaseHashLoss | None = None,
             checkpoint: Path | None = None, on_epoch_end: Callable[[int], None] | None = None,
             backbone: Backbone | None = None) -> tuple[FineTunedBackbone, HashHead]:
    """Fine-tune the backbone's last ``config.tail_blocks`` blocks + head on cached trunk activations.

    Returns the full (trunk → tuned tail) backbone and the head. The tail starts from the
    ImageNet weights and keeps its BatchNorm statistics frozen; it trains with ``config.tail_lr``,
    the head with ``config.lr`` (``tail_epochs`` × ``tail_batch_size``), on every view in
    ``config.views``. As in ``fit_head``, pooled features are standardised (here with the
    ImageNet tail's statistics) and the scaling is folded into the hash layer at the end.
    """
    loss = loss if loss is not None else default_loss(config)
    backbone = backbone if backbone is not None else Backbone()
    trunk, tail = backbone.split(config.tail_blocks)
    x = np.concatenate([activations[v] for v in config.views])
    y = np.tile(np.asarray(labels, np.int64), len(config.views))
    mean, scale = _standardisation(encode_pooled(tail, x[:: max(1, len(x) // 1024)]))
    mean_t, scale_t = torch.from_numpy(mean), torch.from_numpy(scale)
    torch.manual_seed(seed)
    head = HashHead(tail.feature_dim, bits, num_classes)

    def batch_features(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        pooled = tail(torch.from_numpy(batch.astype(np.float32)))
        return _dropout((pooled - mean_t) * scale_t, rng, config.feature_dropout)

    fit(x, y, head, batch_features, loss, modules={"head": head, "tail": tail},
        groups=[ParamGroup(head.parameters(), config.lr), ParamGroup(tail.parameters(), config.tail_lr)],
        epochs=config.tail_epochs, batch_size=config.tail_batch_size, weight_decay=config.weight_decay,
        seed=seed, settings=config, checkpoint=checkpoint, on_epoch_end=on_epoch_end, progress=progress,
        desc="fine-tune")
    _fold_standardisation(head, mean_t, scale_t)
    return FineTunedBackbone(trunk, tail), head


def encode_pooled(tail: Tail, activations: np.ndarray) -> np.ndarray:
    """Pooled N×1280 features of cached trunk activations through ``tail`` (no gradients)."""
    with torch.no_grad():
        return torch.cat([tail(torch.from_numpy(activations[i:i + ENCODE_BATCH].astype(np.float32)))
                          for i in range(0, len(activations), ENCODE_BATCH)]
                         + [torch.empty(0, tail.feature_dim)]).numpy()


def _standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and 1/σ of N×D features (float32).

    A channel (almost) constant over the training images carries no signal; folding 1/σ of it
    into W would blow up u on any new image that does excite it, so its scale is 0 instead.
    """
    mean, std = x.mean(axis=0), x.std(axis=0)
    scale = np.where(std > 1e-3 * np.median(std), 1.0 / np.maximum(std, 1e-12), 0.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def _dropout(features: torch.Tensor, rng: np.random.Generator, rate: float) -> torch.Tensor:
    """Feature dropout with masks from numpy bytes: far cheaper than torch's Bernoulli, and drawn
    from the fit's own generator, so a resumed fit replays the same masks."""
    drop_below = round(rate * 256)
    if not drop_below:
        return features
    keep = rng.integers(0, 256, features.shape, dtype=np.uint8) >= drop_below
    return features * torch.from_numpy(keep) * (256 / (256 - drop_below))


def _fold_standardisation(head: HashHead, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """Fold the feature standardisation into the hash layer: u = W (f − μ)/σ + v = (W/σ) f + (v − W μ/σ)."""
    with torch.no_grad():
        w = head.hash.weight * scale
        head.hash.bias -= w @ mean
        head.hash.weight.copy_(w)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _head_outputs(head: HashHead, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        u, logits = head(torch.from_numpy(features))
    return u.numpy(), logits.numpy()


def train(split: Split, *, bits: int = 64, seed: int = 0, epochs: int | None = None,
          config: HeadConfig | None = None, cache_dir: Path | None = None,
          progress: bool = True, method: str = "dhcnn", loss: BaseHashLoss | None = None,
          checkpoint: Path | None = None) -> TrainResult:
    """Cache features, fit (fine-tune the tail +) the head, score it; the model is the full network.

    ``method`` names the loss in the model's facts; ``loss`` is that method's loss (default
    DHCNN from ``config``).
    """
    config = config or HeadConfig()
    if epochs is not None:
        config = replace(config, epochs=epochs, tail_epochs=epochs)
    facts: ModelFacts = backbone_facts(split, bits, method=method)
    feats = cached_features(split, facts, config.views, cache_dir=cache_dir, progress=progress,
                            tail_blocks=config.tail_blocks)
    train_labels, num_classes = split.labels("training"), len(split.class_names)
    if config.tail_blocks:
        backbone, head = fit_tail(feats.training, train_labels, bits, num_classes, config, seed=seed,
                                  progress=progress, loss=loss, checkpoint=checkpoint)
        db_features = encode_pooled(backbone.tail, feats.database)
        query_features = encode_pooled(backbone.tail, feats.queries)
        model = HashNet(bits, num_classes, backbone=backbone)
    else:
        head = fit_head(feats.training, train_labels, bits, num_classes, config, seed=seed,
                        progress=progress, loss=loss, checkpoint=checkpoint)
        db_features, query_features = feats.database, feats.queries
        model = HashNet(bits, num_classes)
    metrics: dict[str, float] = {}
    if split.queries:
        u_db, _ = _head_outputs(head, db_features)
        u_q, logits_q = _head_outputs(head, query_features)
        metrics = score(u_db, split.labels("database"), u_q, logits_q, split.labels("queries"))
    log.info("trained %d-bit model on %s: %s", bits, split.name, metrics)
    model.head.load_state_dict(head.state_dict())
    return TrainResult(model.eval(), facts, metrics)


def train_and_export(split: Split, *, bits: int = 64, repo_dir: Path, model_name: str = "orbithash",
                     seed: int = 0, epochs: int | None = None, progress: bool = True,
                     cache_dir: Path | None = None, config: HeadConfig | None = None, method: str = "dhcnn",
                     loss: BaseHashLoss | None = None, checkpoint: Path | None = None) -> ModelFacts:
    """Train on the split's training images and export to ``repo_dir/<model_name>``; return the facts."""
    result = train(split, bits=bits, seed=seed, epochs=epochs, cache_dir=cache_dir, progress=progress,
                   config=config, method=method, loss=loss, checkpoint=checkpoint)
    return export_trained(result, repo_dir, model_name)
