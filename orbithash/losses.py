"""Hashing losses: a base class for the shared parts and one small class per method.

``BaseHashLoss`` checks shapes, builds the label similarity, adds the quantisation term and the
classification term and combines them; a method only writes ``pair_loss(u, s)``. A loss holds no
dataset-sized state, so it is tested alone on tiny hand-worked inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def similarity(labels: torch.Tensor) -> torch.Tensor:
    """s_ij = 1 when items i and j share a class (int labels N, or multi-hot N×C), else 0."""
    if labels.dim() == 1:
        return (labels[:, None] == labels[None, :]).float()
    hot = labels.float()
    return (hot @ hot.T > 0).float()


def binarise(u: torch.Tensor) -> torch.Tensor:
    """b = sgn(u) as the served code reads it (u > 0 → +1, else −1), outside the graph."""
    return torch.where(u > 0, 1.0, -1.0).to(u.dtype).detach()


class BaseHashLoss(nn.Module):
    """loss = (1 − η)·[pair_loss(u, S) + β·mean_ij (b_ij − u_ij)²] + η·CE(logits, labels).

    η ∈ [0, 1] moves weight from the hashing terms to the classifier (η = 0: pure hashing,
    η = 1: pure classification); this is the convention of OrbitHash, the DHCNN code uses both
    senses. The quantisation term is a mean over all N·K entries so β does not depend on K.
    """

    def __init__(self, *, beta: float = 0.1, eta: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta
        self.eta = eta

    def pair_loss(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, u: torch.Tensor, labels: torch.Tensor,
                logits: torch.Tensor | None = None) -> torch.Tensor:
        if u.dim() != 2 or u.shape[0] < 2:
            raise ValueError(f"u must be N×K with N >= 2, got shape {tuple(u.shape)}")
        if labels.shape[0] != u.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {u.shape[0]} codes")
        hashing = self.pair_loss(u, similarity(labels))
        if self.beta:
            hashing = hashing + self.beta * (binarise(u) - u).pow(2).mean()
        loss = (1.0 - self.eta) * hashing
        if self.eta:
            if logits is None or labels.dim() != 1:
                raise ValueError("eta > 0 needs logits and integer class labels")
            loss = loss + self.eta * F.cross_entropy(logits, labels)
        return loss


class DHCNNLoss(BaseHashLoss):
    """DHCNN / DPSH pairwise likelihood: mean over pairs i ≠ j of log(1 + e^Θ_ij) − s_ij·Θ_ij.

    Θ_ij = u_i·u_j / p. It is −log p(s_ij | u_i, u_j) with p(s = 1) = σ(Θ), computed as
    softplus(Θ) − s·Θ so large |Θ| neither overflows nor loses precision. ``theta_scale`` is p
    (DPSH uses 2, the DHCNN code 32); a larger p keeps σ(Θ) out of saturation for long codes.
    """

    def __init__(self, *, theta_scale: float = 2.0, beta: float = 0.1, eta: float = 0.5) -> None:
        super().__init__(beta=beta, eta=eta)
        if theta_scale <= 0:
            raise ValueError(f"theta_scale must be > 0, got {theta_scale}")
        self.theta_scale = theta_scale

    def pair_loss(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        theta = u @ u.T / self.theta_scale
        per_pair = F.softplus(theta) - s * theta
        n = u.shape[0]
        return (per_pair.sum() - per_pair.diagonal().sum()) / (n * (n - 1))
