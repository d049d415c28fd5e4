"""What every hashing loss shares: label similarity, the quantisation term, the classifier term.

``BaseHashLoss`` checks shapes, builds the label similarity, adds the quantisation term and the
classification term and combines them; a method only writes ``pair_loss(u, s)``. The
quantisation term is a part passed in (``quantisation=``), so DSH's ‖|u| − 1‖₁ and DPSH's
‖b − u‖² need no ``if`` in the base. A loss holds no dataset-sized state, so it is tested alone
on tiny hand-worked inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Quantisation = Callable[[torch.Tensor], torch.Tensor]


def similarity(labels: torch.Tensor) -> torch.Tensor:
    """s_ij = 1 when items i and j share a class (int labels N, or multi-hot N×C), else 0."""
    if labels.dim() == 1:
        return (labels[:, None] == labels[None, :]).float()
    hot = labels.float()
    return (hot @ hot.T > 0).float()


def binarise(u: torch.Tensor) -> torch.Tensor:
    """b = sgn(u) as the served code reads it (u > 0 → +1, else −1), outside the graph."""
    return torch.where(u > 0, 1.0, -1.0).to(u.dtype).detach()


def sign_gap(u: torch.Tensor) -> torch.Tensor:
    """mean over the N·K entries of (b − u)², b = sgn(u) (DPSH, DHCNN); the mean keeps β K-free."""
    return (binarise(u) - u).pow(2).mean()


def unit_l1_gap(u: torch.Tensor) -> torch.Tensor:
    """mean over items of ‖|u_i| − 1‖₁ (DSH's regulariser, summed over the K bits as in the paper).

    Summed over bits because DSH's pair term (‖u_i − u_j‖², margin 2K) also grows with K: the
    paper's α = 0.01 then keeps its meaning at every code length.
    """
    return (u.abs() - 1.0).abs().sum(dim=1).mean()


def off_diagonal_mean(per_pair: torch.Tensor) -> torch.Tensor:
    """Mean of an N×N pair matrix over i ≠ j (a code is never its own pair)."""
    n = per_pair.shape[0]
    return (per_pair.sum() - per_pair.diagonal().sum()) / (n * (n - 1))


class BaseHashLoss(nn.Module):
    """loss = (1 − η)·[pair_loss(u, S) + β·quantisation(u)] + η·CE(logits, labels).

    η ∈ [0, 1] moves weight from the hashing terms to the classifier (η = 0: pure hashing,
    η = 1: pure classification); this is the convention of OrbitHash, the DHCNN code uses both
    senses. ``quantisation`` defaults to the mean (b − u)² over all N·K entries.
    """

    def __init__(self, *, beta: float = 0.1, eta: float = 0.5, quantisation: Quantisation = sign_gap) -> None:
        super().__init__()
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta
        self.eta = eta
        self.quantisation = quantisation

    @property
    def trains_classifier(self) -> bool:
        """Whether this loss has a classification term (else the logits carry no trained signal)."""
        return bool(self.eta)

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
            hashing = hashing + self.beta * self.quantisation(u)
        loss = (1.0 - self.eta) * hashing
        if self.eta:
            if logits is None or labels.dim() != 1:
                raise ValueError("eta > 0 needs logits and integer class labels")
            loss = loss + self.eta * self.classification_loss(logits, labels)
        return loss

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy of the classifier on the hash layer."""
        return F.cross_entropy(logits, labels)
