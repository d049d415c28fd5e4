"""DHCNN (Song, Li, Benediktsson, IEEE TGRS 2021): DPSH's pair likelihood + a classifier on u."""

from __future__ import annotations

from orbithash.losses.dpsh import DPSHLoss


class DHCNNLoss(DPSHLoss):
    """(1 − η)·[mean_{i≠j} (log(1 + e^Θ_ij) − s_ij Θ_ij) + β·mean (b − u)²] + η·CE(W_c u, y).

    Θ_ij = uᵢᵀuⱼ / p. DHCNN is DPSH's hashing loss with a softmax classifier on the hash layer;
    the classifier is what lets one code serve both retrieval and the class prediction. η is the
    classifier's share (OrbitHash's convention; the authors' two code versions use opposite senses).
    """

    def __init__(self, *, theta_scale: float = 2.0, beta: float = 0.1, eta: float = 0.5) -> None:
        super().__init__(theta_scale=theta_scale, beta=beta, eta=eta)
