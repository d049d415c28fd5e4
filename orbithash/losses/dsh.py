"""DSH (Liu, Wang, Shan, Chen, CVPR 2016): a contrastive loss on relaxed codes."""

from __future__ import annotations

import torch

from orbithash.losses.base import BaseHashLoss, off_diagonal_mean, unit_l1_gap


class DSHLoss(BaseHashLoss):
    """mean_{i≠j} [½ s_ij D_ij + ½ (1 − s_ij) max(m − D_ij, 0)] + α·mean_i ‖|u_i| − 1‖₁.

    D_ij = ‖u_i − u_j‖²₂ on the real-valued outputs; the margin m defaults to 2K, the paper's
    choice (the squared distance of two codes in {−1, 1}^K that differ in half their bits), and
    α = 0.01. The regulariser pulls every entry towards ±1 so that thresholding loses little.
    (The paper writes y = 0 for similar pairs; here s = 1 is similar, as in the other losses.)
    The pair terms are averaged over ordered pairs, which equals the mean over unordered ones.
    DSH has no classifier: η = 0 by default.
    """

    def __init__(self, *, margin: float | None = None, alpha: float = 0.01, eta: float = 0.0) -> None:
        super().__init__(beta=alpha, eta=eta, quantisation=unit_l1_gap)
        if margin is not None and margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.margin = margin

    def pair_loss(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        m = 2.0 * u.shape[1] if self.margin is None else self.margin
        d = torch.cdist(u, u).pow(2)
        per_pair = 0.5 * s * d + 0.5 * (1.0 - s) * torch.clamp(m - d, min=0.0)
        return off_diagonal_mean(per_pair)
