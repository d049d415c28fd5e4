"""The aurora paper's (Im-AlexNet-SP) multi-task loss: classification + pairwise hashing + quantisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orbithash.losses.dpsh import DPSHLoss


class AuroraLoss(DPSHLoss):
    """L = λ_c·CE(W_c u, y) + mean_{i≠j} (log(1 + e^Θ_ij) − s_ij Θ_ij) + β·mean (b − u)².

    The paper trains its SPP + PMT AlexNet jointly on a softmax classifier placed after the hash
    layer and a pairwise likelihood on the hash layer; the tasks are *added* with a weight λ_c on
    the classifier (a multi-task sum) rather than traded off by DHCNN's convex η. Label
    smoothing ε on the cross-entropy is an OrbitHash addition (default 0: the paper's loss).
    Θ_ij = uᵢᵀuⱼ / p as in DPSH. The base's η stays 0; the sum is assembled here.
    """

    def __init__(self, *, class_weight: float = 1.0, theta_scale: float = 2.0, beta: float = 0.1,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(theta_scale=theta_scale, beta=beta, eta=0.0)
        if class_weight < 0:
            raise ValueError(f"class_weight must be >= 0, got {class_weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing

    @property
    def trains_classifier(self) -> bool:
        return bool(self.class_weight)

    def forward(self, u: torch.Tensor, labels: torch.Tensor,
                logits: torch.Tensor | None = None) -> torch.Tensor:
        hashing = super().forward(u, labels)
        if not self.class_weight:
            return hashing
        if logits is None or labels.dim() != 1:
            raise ValueError("class_weight > 0 needs logits and integer class labels")
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return hashing + self.class_weight * ce
