"""A fit's per-epoch state on disk, so that an interrupted fit resumes to the same weights.

A checkpoint holds everything a later epoch depends on (modules, optimiser, schedule, the numpy
generator that orders batches and draws augmentation, torch's generator for in-network dropout)
under a fingerprint of what was fitted; one of another fit is ignored, never half-applied.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from orbithash.files import atomic_write
from orbithash.losses import BaseHashLoss

log = logging.getLogger(__name__)


def fingerprint(data: np.ndarray, labels: np.ndarray, loss: BaseHashLoss, seed: int, *settings: object) -> str:
    """What a checkpoint must match to be resumed: a sample of the data, the labels, the loss and
    its parameters, the seed and the trainer's ``settings`` (hyper-parameters, shapes, ...)."""
    params = sorted((k, v) for k, v in vars(loss).items() if isinstance(v, int | float | str | None))
    h = hashlib.sha256(repr((data.shape, str(data.dtype), type(loss).__name__, params, seed, settings)).encode())
    h.update(np.ascontiguousarray(data[:: max(1, len(data) // 256)]).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()[:16]


class Checkpoint:
    """Per-epoch state of one fit under its fingerprint; ``path=None`` turns checkpointing off."""

    def __init__(self, path: Path | None, fingerprint: str, modules: dict[str, nn.Module],
                 opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                 rng: np.random.Generator) -> None:
        self.path = None if path is None else Path(path)
        self.fingerprint = fingerprint
        self.modules, self.opt, self.sched, self.rng = modules, opt, sched, rng

    def resume(self) -> int:
        """Restore a matching checkpoint and return the epoch to start from (0 without one)."""
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
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming the fit from %s at epoch %d", self.path, int(state["epoch"]))
        return int(state["epoch"])

    def save(self, epoch: int) -> None:
        """Write the state after ``epoch`` epochs atomically: a crash keeps the previous epoch's."""
        if self.path is None:
            return
        state = {"fingerprint": self.fingerprint, "epoch": epoch, "opt": self.opt.state_dict(),
                 "sched": self.sched.state_dict(), "rng": self.rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(),
                 **{name: module.state_dict() for name, module in self.modules.items()}}
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
