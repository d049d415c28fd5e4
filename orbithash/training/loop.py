"""The one training loop of every trainer (head fit, tail fine-tune, from-scratch fit).

A trainer supplies only what differs: which modules train (and their parameter groups with
learning rates), and how a batch of its inputs becomes the features the hash layer reads
(decoding, augmentation, a tail network, dropout). The loop owns the rest, once: seeding,
AdamW with a one-cycle schedule, the batch order, the loss step, the per-epoch checkpoint with
bit-identical resume, progress and ``on_epoch_end``.

The classifier on u is always trained. When the loss has a classification term it reads u and
shapes the codes; when it has none (DSH, DPSH: pure hashing) it reads u detached, so it cannot
shape the codes, yet the served model still predicts a class that was learnt, not noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from orbithash.losses import BaseHashLoss
from orbithash.models import HashHead
from orbithash.training.checkpoint import Checkpoint, fingerprint

BatchFeatures = Callable[[np.ndarray, np.random.Generator], torch.Tensor]
"""A batch of the trainer's inputs (rows of ``data``) and the fit's generator → hash-layer input."""

LOSS_EVERY = 50  # steps between loss read-outs on the progress bar (``.item()`` synchronises)


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that train at one peak learning rate."""

    params: Iterable[nn.Parameter]
    lr: float


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Each epoch splits a permutation of the n items into this many nearly equal batches.

    ``ceil(n / batch_size)``: every item is seen every epoch and no batch exceeds ``batch_size``;
    capped so that every batch still holds two items (a pairwise loss needs a pair).
    """
    return max(1, min(-(-n // batch_size), n // 2))


def fit(data: np.ndarray, labels: np.ndarray, head: HashHead, features: BatchFeatures, loss: BaseHashLoss, *,
        modules: dict[str, nn.Module], groups: Sequence[ParamGroup], epochs: int, batch_size: int,
        weight_decay: float, seed: int, settings: object = None, checkpoint: Path | None = None,
        on_epoch_end: Callable[[int], None] | None = None, progress: bool = False, desc: str = "fit") -> None:
    """Train ``modules`` (``head`` among them or inside them) in place on ``data`` with ``loss``.

    Batches are sorted index sets of a fresh permutation each epoch (sorted: gathers from a
    large array stay sequential); ``features(data[idx], rng)`` turns one into the hash layer's
    input. The batch order and any augmentation drawn from ``rng`` come from a numpy generator
    seeded with ``seed``, in-network randomness (dropout) from torch's, seeded too; both are
    checkpointed. With ``checkpoint`` the state is saved after every epoch and a checkpoint of
    the same fit (data, labels, loss, seed, ``settings``, module shapes) is resumed from, so an
    interrupted fit ends with exactly the weights of an uninterrupted one; a checkpoint of
    another fit is ignored and overwritten. ``on_epoch_end(epoch)`` runs after each epoch's
    checkpoint. Modules are left in eval mode.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(np.asarray(labels, np.int64))
    per_epoch = batches_per_epoch(len(data), batch_size)
    opt = torch.optim.AdamW([{"params": list(g.params), "lr": g.lr} for g in groups], weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g.lr for g in groups],
                                                total_steps=max(1, epochs * per_epoch))
    shapes = [(name, tuple(p.shape)) for m in modules.values() for name, p in m.state_dict().items()]
    saved = Checkpoint(checkpoint, fingerprint(data, labels, loss, seed, settings, shapes) if checkpoint else "",
                       modules, opt, sched, rng)
    first_epoch = saved.resume()
    for module in modules.values():
        module.train()
    with tqdm(total=epochs * per_epoch, initial=first_epoch * per_epoch, desc=desc, unit="batch",
              disable=not progress) as bar:
        for epoch in range(first_epoch, epochs):
            for step, idx in enumerate(np.array_split(rng.permutation(len(data)), per_epoch)):
                idx.sort()
                value = step_loss(head, features(data[idx], rng), y[idx], loss)
                opt.zero_grad()
                value.backward()
                opt.step()
                sched.step()
                bar.update(1)
                if step % LOSS_EVERY == 0:
                    bar.set_postfix(loss=f"{value.item():.3f}")
            saved.save(epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    for module in modules.values():
        module.eval()


def step_loss(head: HashHead, features: torch.Tensor, labels: torch.Tensor, loss: BaseHashLoss) -> torch.Tensor:
    """The loss of one batch, classifier included: on detached u when the loss does not train it."""
    u = head.hash(features)
    logits = head.classifier(u if loss.trains_classifier else u.detach())
    value = loss(u, labels, logits)
    if not loss.trains_classifier:
        value = value + F.cross_entropy(logits, labels)
    return value
