"""DPSH (Li, Wang, Kang, IJCAI 2016): the pairwise likelihood of the label similarities."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orbithash.losses.base import BaseHashLoss, off_diagonal_mean


class DPSHLoss(BaseHashLoss):
    """mean over pairs i ≠ j of log(1 + e^Θ_ij) − s_ij·Θ_ij, Θ_ij = uᵢᵀuⱼ / p, + β·mean (b − u)².

    It is −log p(s_ij | u_i, u_j) with p(s = 1) = σ(Θ), computed as softplus(Θ) − s·Θ so large
    |Θ| neither overflows nor loses precision. ``theta_scale`` is p: DPSH's Θ = ½ uᵢᵀuⱼ is p = 2
    (the DHCNN code uses 32; a larger p keeps σ(Θ) out of saturation for long codes). The paper
    sums over pairs and weights the quantisation by η; here both are means (weight β) so the
    weights do not depend on batch size or K, and η names the classifier weight of the base.
    Plain DPSH has no classifier: η = 0 by default.
    """

    def __init__(self, *, theta_scale: float = 2.0, beta: float = 0.1, eta: float = 0.0) -> None:
        super().__init__(beta=beta, eta=eta)
        if theta_scale <= 0:
            raise ValueError(f"theta_scale must be > 0, got {theta_scale}")
        self.theta_scale = theta_scale

    def pair_loss(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        theta = u @ u.T / self.theta_scale
        return off_diagonal_mean(F.softplus(theta) - s * theta)
