"""Hashing losses: ``BaseHashLoss`` does the shared work, one file per method writes its pair term.

``LOSSES`` maps a method name (the ``method`` of a training config) to its loss class; a new
hashing method is one entry here plus a config file, never a copy of the training loop.
"""

from __future__ import annotations

from orbithash.losses.aurora import AuroraLoss
from orbithash.losses.base import BaseHashLoss, binarise, sign_gap, similarity, unit_l1_gap
from orbithash.losses.dhcnn import DHCNNLoss
from orbithash.losses.dpsh import DPSHLoss
from orbithash.losses.dsh import DSHLoss

LOSSES: dict[str, type[BaseHashLoss]] = {
    "dhcnn": DHCNNLoss,
    "dpsh": DPSHLoss,
    "dsh": DSHLoss,
    "aurora": AuroraLoss,
}


def make_loss(method: str, **params: float) -> BaseHashLoss:
    """The loss of ``method`` with its keyword parameters; KeyError names the known methods."""
    try:
        cls = LOSSES[method]
    except KeyError:
        raise KeyError(f"unknown hashing method {method!r}; known: {', '.join(sorted(LOSSES))}") from None
    return cls(**params)


__all__ = [
    "LOSSES",
    "AuroraLoss",
    "BaseHashLoss",
    "DHCNNLoss",
    "DPSHLoss",
    "DSHLoss",
    "binarise",
    "make_loss",
    "sign_gap",
    "similarity",
    "unit_l1_gap",
]
