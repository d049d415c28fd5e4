"""Train a hashing network on cached backbone activations and export the whole network.

Most of the backbone (ImageNet EfficientNet-Lite0) stays frozen, so its output is computed once
per dataset, with ONNX Runtime (~10× faster than torch on CPU here), and cached on disk; flipped
and rotated copies of each training image are cached beside them as cheap augmentation (aerial
scenes have no canonical orientation). By default (``HeadConfig.tail_blocks = 1``) the cache
holds the 192×7×7 input of the last MBConv block, and that block + ``_conv_head`` + ``_bn1``
(BatchNorm statistics frozen) are fine-tuned together with the head u = W f + v → classifier
(``fit_tail``, ~2 min on 2 cores); with ``tail_blocks = 0`` the whole backbone is frozen, the
cache holds pooled features and only the head is fitted (``fit_head``, seconds). Either fit
uses fixed seeds and any loss of ``orbithash.losses`` (DHCNN by default); with a checkpoint path
it saves its full state every epoch and resumes bit-identically. The exported model is one
network, trunk → tail → head. Images pass through ``orbithash.images`` exactly as when served.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from orbithash.bits import pack_signs
from orbithash.data import ImageRecord, Split
from orbithash.evaluation.metrics import accuracy, mean_average_precision
from orbithash.export.onnx_export import export_model, onnx_bytes
from orbithash.export.repository import load_facts_from_onnx
from orbithash.images import decode_image, preprocess
from orbithash.losses import BaseHashLoss, DHCNNLoss
from orbithash.model_facts import ModelFacts
from orbithash.models import (
    BACKBONE_INPUT_SIZE,
    BACKBONE_MEAN,
    BACKBONE_NAME,
    BACKBONE_STD,
    Backbone,
    FineTunedBackbone,
    HashHead,
    HashNet,
    Tail,
)

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "ORBITHASH_CACHE_DIR"
EXTRACT_BATCH = 8  # ONNX Runtime on 2 cores is fastest at 4–8 images per run
FEATURE_FORMAT = 1  # bump when the cached features' meaning changes
FIT_BATCHES_PER_EVAL = 256  # images per forward pass when the tail only encodes

View = Callable[[np.ndarray], np.ndarray]
VIEWS: dict[str, View] = {
    "orig": lambda x: x,
    "hflip": lambda x: x[..., ::-1],
    "vflip": lambda x: x[..., ::-1, :],
    "rot90": lambda x: np.rot90(x, 1, axes=(2, 3)),
    "rot180": lambda x: x[..., ::-1, ::-1],
    "rot270": lambda x: np.rot90(x, 3, axes=(2, 3)),
    "transpose": lambda x: np.swapaxes(x, 2, 3),
    "antitranspose": lambda x: np.rot90(np.swapaxes(x, 2, 3), 2, axes=(2, 3)),
}


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of the fit: the frozen-backbone head fit and the tail fine-tune.

    Defaults were chosen at 64 bits on UC Merced's training set alone (64 images per class fit,
    16 held out), never on the queries. Frozen backbone (``tail_blocks = 0``), held-out mAP:
    theta_scale p = 2 / 8 / 32 → 0.962 / 0.958 / 0.958; views 1 / 2 / 4 / 8 (D4) → 0.943 /
    0.952 / 0.962 / 0.959; η 0.2 / 0.5 / 0.8 → 0.961 / 0.962 / 0.956; β 0 / 0.1 / 1 → 0.960 /
    0.962 / 0.959 (spread between seeds ≈ 0.003). Fine-tuned tail, 4 views, 8 epochs, batch 64,
    head lr 1e-3, held-out mAP / accuracy: frozen (same schedule) 0.952 / 0.967; ``_conv_head``
    only 0.952 / 0.970; last block + ``_conv_head`` with tail_lr 1e-4 / 3e-4 / 1e-3 → 0.973 /
    0.985, 0.986 / 0.988, 0.991 / 0.997 (3e-4 with seed 1: 0.988 / 0.991); label smoothing 0.1 (tail_lr
    1e-4) 0.963 / 0.976.

    ``epochs``, ``batch_size`` and ``lr`` are the head fit's; ``tail_epochs``,
    ``tail_batch_size``, ``lr`` (head) and ``tail_lr`` (tail) the fine-tune's. ``train(epochs=)``
    overrides whichever fit runs.
    """

    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    theta_scale: float = 2.0
    beta: float = 0.1
    eta: float = 0.5
    feature_dropout: float = 0.2
    views: tuple[str, ...] = ("orig", "hflip", "vflip", "rot90")
    tail_blocks: int = 1
    tail_epochs: int = 8
    tail_batch_size: int = 64
    tail_lr: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 <= self.tail_blocks <= 16:
            raise ValueError(f"tail_blocks must be in 0..16, got {self.tail_blocks}")
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown or not self.views:
            raise ValueError(f"views must be a non-empty subset of {', '.join(VIEWS)}, got {self.views}")


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


@dataclass(frozen=True)
class TrainResult:
    model: HashNet
    facts: ModelFacts
    metrics: dict[str, float]


def default_cache_dir() -> Path:
    """``$ORBITHASH_CACHE_DIR`` or ``cache/`` at the repository root (git ignores it)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "cache"


def backbone_facts(split: Split, bits: int, name: str = "orbithash", method: str = "dhcnn") -> ModelFacts:
    """Facts of a model on this split before export gives it its version."""
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
            x = np.stack([preprocess(decode_image(r.data), facts) for r in batch])
            for v in views:
                chunks[v].append(backbone(VIEWS[v](x)).astype(dtype, copy=False))
                bar.update(len(batch))
    return {v: np.concatenate(c) for v, c in chunks.items()}


def _cache_key(split: Split, facts: ModelFacts, views: Sequence[str], tail_blocks: int = 0) -> str:
    h = hashlib.sha256()
    what = (FEATURE_FORMAT, facts.backbone, facts.input_size, facts.mean, facts.std, tuple(views))
    # tail_blocks 0 (pooled features) keeps the key it always had, so those caches stay valid.
    h.update(repr(what if not tail_blocks else (*what, "trunk", tail_blocks)).encode())
    parts = [split.database, split.queries] + ([] if split.train is None else [split.train])
    for part in parts:
        h.update(b"|part|")
        for r in part:
            h.update(f"{r.id}:{r.label}:{len(r.data)}:".encode())
            h.update(hashlib.sha256(r.data).digest())
    return h.hexdigest()[:16]


def cached_features(split: Split, facts: ModelFacts, views: Sequence[str], *, cache_dir: Path | None = None,
                    progress: bool = True, tail_blocks: int = 0) -> Features:
    """Features of the split from the cache, extracting and storing them when absent.

    ``tail_blocks = 0``: pooled N×1280 float32 features of the whole frozen backbone. Otherwise
    the trunk's activations (the input of the last ``tail_blocks`` MBConv blocks, N×C×7×7) as
    float16, for ``fit_tail``. The training images are extracted under every view (``orig``
    added when missing), queries and a separate database unaugmented. The key hashes every
    image's bytes and label plus the backbone, preprocessing, views and cut, so a changed
    dataset, seed, subset or split never reads stale features.
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
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, queries=queries, **{f"db_{v}": a for v, a in training.items()}, **extra)
    os.replace(tmp, path)
    return Features(training, queries, extra.get("database"))

def _fingerprint(x: np.ndarray, labels: np.ndarray, bits: int, num_classes: int, config: HeadConfig,
                 seed: int, loss: BaseHashLoss) -> str:
    """What a checkpoint must match to be resumed: data, shapes, hyper-parameters, loss, seed."""
    params = sorted((k, v) for k, v in vars(loss).items() if isinstance(v, int | float | str | None))
    h = hashlib.sha256(repr((x.shape, bits, num_classes, config, seed, type(loss).__name__, params)).encode())
    h.update(np.ascontiguousarray(x[:: max(1, len(x) // 256)]).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()[:16]


def fit_head(features: dict[str, np.ndarray], labels: np.ndarray, bits: int, num_classes: int,
             config: HeadConfig, *, seed: int = 0, progress: bool = False, loss: BaseHashLoss | None = None,
             checkpoint: Path | None = None, on_epoch_end: Callable[[int], None] | None = None) -> HashHead:
    """Fit the hash layer and classifier with ``loss`` (default DHCNN from ``config``) on every view.

    Features are standardised for the fit and the scaling folded back into W and v afterwards,
    so the exported hash layer still reads raw pooled features. With ``checkpoint`` the head,
    optimiser, schedule and numpy RNG state are written after every epoch and a matching
    checkpoint (same data, hyper-parameters, loss and seed) is resumed from, so an interrupted
    fit ends with the same weights as an uninterrupted one; a non-matching one is ignored and
    overwritten. ``on_epoch_end(epoch)`` runs after each epoch's checkpoint.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.concatenate([features[v] for v in config.views]).astype(np.float32)
    y = np.tile(np.asarray(labels, np.int64), len(config.views))
    mean, std = x.mean(axis=0), x.std(axis=0)
    # A channel (almost) constant over the training images carries no signal; folding 1/σ of it
    # into W would blow up u on any new image that does excite it, so it is dropped instead.
    scale = np.where(std > 1e-3 * np.median(std), 1.0 / np.maximum(std, 1e-12), 0.0).astype(np.float32)
    xt = torch.from_numpy((x - mean) * scale)
    yt = torch.from_numpy(y)
    head = HashHead(x.shape[1], bits, num_classes)
    loss_fn = loss if loss is not None else DHCNNLoss(theta_scale=config.theta_scale, beta=config.beta,
                                                      eta=config.eta)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(x) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    saved = _Checkpoint(checkpoint, lambda: _fingerprint(x, y, bits, num_classes, config, seed, loss_fn),
                        {"head": head}, opt, sched, rng)
    first_epoch = saved.resume("head")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are small: a second thread costs more than it gives
    head.train()
    try:
        for epoch in tqdm(range(first_epoch, config.epochs), desc="head", unit="epoch", disable=not progress,
                          initial=first_epoch, total=config.epochs):
            for idx in torch.from_numpy(rng.permutation(len(x))).split(config.batch_size):
                if len(idx) < 2:
                    continue
                _step(head, xt[idx], yt[idx], loss_fn, opt, sched, rng, config.feature_dropout)
            saved.save(epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    finally:
        torch.set_num_threads(threads)
    _fold_standardisation(head, torch.from_numpy(mean), torch.from_numpy(scale))
    return head


def encode_pooled(tail: Tail, activations: np.ndarray) -> np.ndarray:
    """Pooled N×1280 features of cached trunk activations through ``tail`` (no gradients)."""
    with torch.no_grad():
        return torch.cat([tail(torch.from_numpy(activations[i:i + FIT_BATCHES_PER_EVAL].astype(np.float32)))
                          for i in range(0, len(activations), FIT_BATCHES_PER_EVAL)]
                         + [torch.empty(0, tail.feature_dim)]).numpy()


def fit_tail(activations: dict[str, np.ndarray], labels: np.ndarray, bits: int, num_classes: int,
             config: HeadConfig, *, seed: int = 0, progress: bool = False, loss: BaseHashLoss | None = None,
             checkpoint: Path | None = None, on_epoch_end: Callable[[int], None] | None = None,
             backbone: Backbone | None = None) -> tuple[FineTunedBackbone, HashHead]:
    """Fine-tune the backbone's last ``config.tail_blocks`` blocks + head on cached trunk activations.

    Returns the full (trunk → tuned tail) backbone and the head. The tail starts from the
    ImageNet weights and keeps its BatchNorm statistics frozen; it trains with ``config.tail_lr``,
    the head with ``config.lr`` (AdamW, one-cycle, ``tail_epochs`` × ``tail_batch_size``), on
    every view in ``config.views``, with feature dropout on the pooled features. As in
    ``fit_head``, pooled features are standardised with the ImageNet tail's statistics and the
    scaling is folded into the hash layer at the end; ``checkpoint`` / ``on_epoch_end`` behave
    the same (resume is bit-identical: the batch order and dropout masks come from a numpy
    generator whose state is checkpointed).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone = backbone if backbone is not None else Backbone()
    trunk, tail = backbone.split(config.tail_blocks)
    x = np.concatenate([activations[v] for v in config.views])
    y = np.tile(np.asarray(labels, np.int64), len(config.views))
    start_features = encode_pooled(tail, x[:: max(1, len(x) // 1024)])  # the ImageNet tail's statistics
    mean, std = start_features.mean(axis=0), start_features.std(axis=0)
    scale = np.where(std > 1e-3 * np.median(std), 1.0 / np.maximum(std, 1e-12), 0.0).astype(np.float32)
    mean_t, scale_t = torch.from_numpy(mean), torch.from_numpy(scale)
    yt = torch.from_numpy(y)
    head = HashHead(tail.feature_dim, bits, num_classes)
    loss_fn = loss if loss is not None else DHCNNLoss(theta_scale=config.theta_scale, beta=config.beta,
                                                      eta=config.eta)
    opt = torch.optim.AdamW([{"params": head.parameters(), "lr": config.lr},
                             {"params": tail.parameters(), "lr": config.tail_lr}],
                            weight_decay=config.weight_decay)
    batch = min(config.tail_batch_size, len(x))
    per_epoch = len(x) // batch  # full batches only: every step sees the same batch size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[config.lr, config.tail_lr],
                                                total_steps=max(1, config.tail_epochs * per_epoch))
    saved = _Checkpoint(checkpoint, lambda: _fingerprint(x, y, bits, num_classes, config, seed, loss_fn),
                        {"head": head, "tail": tail}, opt, sched, rng)
    first_epoch = saved.resume("tail")
    head.train()
    with tqdm(total=config.tail_epochs * per_epoch, initial=first_epoch * per_epoch, desc="fine-tune",
              unit="batch", disable=not progress) as bar:
        for epoch in range(first_epoch, config.tail_epochs):
            order = rng.permutation(len(x))
            for step in range(per_epoch):
                idx = np.sort(order[step * batch:(step + 1) * batch])
                f = (tail(torch.from_numpy(x[idx].astype(np.float32))) - mean_t) * scale_t
                _step(head, f, yt[idx], loss_fn, opt, sched, rng, config.feature_dropout)
                bar.update(1)
            saved.save(epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    _fold_standardisation(head, mean_t, scale_t)
    return FineTunedBackbone(trunk, tail), head


def _step(head: HashHead, features: torch.Tensor, labels: torch.Tensor, loss_fn: BaseHashLoss,
          opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator,
          dropout: float) -> None:
    """One optimiser step on a batch of (standardised) features, with feature dropout.

    Dropout masks come from numpy bytes: ~10× cheaper than torch's Bernoulli, and drawn from the
    fit's own generator, so a resumed fit replays the same masks.
    """
    drop_below = round(dropout * 256)
    if drop_below:
        keep = rng.integers(0, 256, features.shape, dtype=np.uint8) >= drop_below
        features = features * torch.from_numpy(keep) * (256 / (256 - drop_below))
    u, logits = head(features)
    loss = loss_fn(u, labels, logits)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def _fold_standardisation(head: HashHead, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """Fold the feature standardisation into the hash layer: u = W (f − μ)/σ + v = (W/σ) f + (v − W μ/σ)."""
    head.eval()
    with torch.no_grad():
        w = head.hash.weight * scale
        head.hash.bias -= w @ mean
        head.hash.weight.copy_(w)


class _Checkpoint:
    """Per-epoch state of a fit (modules, optimiser, schedule, numpy RNG) under a fingerprint.

    Resuming restores everything a later epoch depends on, so a resumed fit ends with exactly the
    weights of an uninterrupted one; a checkpoint of another fit is ignored. ``path=None``: off.
    """

    def __init__(self, path: Path | None, fingerprint: Callable[[], str], modules: dict[str, torch.nn.Module],
                 opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                 rng: np.random.Generator) -> None:
        self.path = None if path is None else Path(path)
        self.fingerprint = fingerprint() if path is not None else ""
        self.modules, self.opt, self.sched, self.rng = modules, opt, sched, rng

    def resume(self, what: str) -> int:
        """The epoch to start from (0 without a matching checkpoint)."""
        if self.path is None or not self.path.exists():
            return 0
        state = torch.load(self.path, weights_only=False)
        if state.get("fingerprint") != self.fingerprint or any(k not in state for k in self.modules):
            log.warning("checkpoint %s is from another fit; starting afresh", self.path)
            return 0
        for name, module in self.modules.items():
            module.load_state_dict(state[name])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.rng.bit_generator.state = state["rng"]
        log.info("resuming the %s fit from %s at epoch %d", what, self.path, int(state["epoch"]))
        return int(state["epoch"])

    def save(self, epoch: int) -> None:
        if self.path is None:
            return
        state = {"fingerprint": self.fingerprint, "epoch": epoch, "opt": self.opt.state_dict(),
                 "sched": self.sched.state_dict(), "rng": self.rng.bit_generator.state,
                 **{name: module.state_dict() for name, module in self.modules.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def evaluate_head(head: HashHead, db_features: np.ndarray, db_labels: np.ndarray,
                  query_features: np.ndarray, query_labels: np.ndarray) -> dict[str, float]:
    """mAP over the whole database (Hamming ranking, ties by database order) and query accuracy."""
    with torch.no_grad():
        u_db, _ = head(torch.from_numpy(db_features))
        u_q, logits_q = head(torch.from_numpy(query_features))
    return {
        "map": mean_average_precision(pack_signs(u_q.numpy()), query_labels, pack_signs(u_db.numpy()),
                                      db_labels, bits=head.bits),
        "accuracy": accuracy(logits_q.numpy(), query_labels),
    }


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
    facts = backbone_facts(split, bits, method=method)
    feats = cached_features(split, facts, config.views, cache_dir=cache_dir, progress=progress,
                            tail_blocks=config.tail_blocks)
    train_labels, db_labels, q_labels = split.labels("training"), split.labels("database"), split.labels("queries")
    if config.tail_blocks:
        backbone, head = fit_tail(feats.training, train_labels, bits, len(split.class_names), config, seed=seed,
                                  progress=progress, loss=loss, checkpoint=checkpoint)
        db_features = encode_pooled(backbone.tail, feats.database)
        query_features = encode_pooled(backbone.tail, feats.queries)
        model = HashNet(bits, len(split.class_names), backbone=backbone)
    else:
        head = fit_head(feats.training, train_labels, bits, len(split.class_names), config, seed=seed,
                        progress=progress, loss=loss, checkpoint=checkpoint)
        db_features, query_features = feats.database, feats.queries
        model = HashNet(bits, len(split.class_names))
    metrics = evaluate_head(head, db_features, db_labels, query_features, q_labels) if split.queries else {}
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


def export_trained(result: TrainResult, repo_dir: Path, model_name: str = "orbithash") -> ModelFacts:
    """Export a trained model to ``repo_dir/<model_name>``; the final facts (with the version)."""
    path = export_model(result.model, result.facts, Path(repo_dir), model_name)
    return load_facts_from_onnx(path)
