"""DSH's small network (Liu et al., CVPR 2016), trained from scratch on 32×32 CIFAR-10 images."""

from __future__ import annotations

import torch
from torch import nn


class DSHNet(nn.Module):
    """conv 5×5 32 → max-pool → conv 5×5 32 → avg-pool → conv 5×5 64 → avg-pool → FC 500 → features.

    The layout of the paper's Caffe net (Caffe's cifar10_quick trunk): 3×3 pools of stride 2 with
    Caffe's ceil rounding take 32×32 to 16, 8, 4, so the FC layer reads 64·4·4 = 1024 values. The
    last layer of the paper, FC K, is the hash layer of ``HashHead``: this module ends at FC 500.
    """

    feature_dim = 500

    def __init__(self, input_size: int = 32) -> None:
        super().__init__()

        def pool(kind: type[nn.Module]) -> nn.Module:
            return kind(kernel_size=3, stride=2, ceil_mode=True)

        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), pool(nn.MaxPool2d), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True), pool(nn.AvgPool2d),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), pool(nn.AvgPool2d),
        )
        side = input_size
        for _ in range(3):
            side = -(-(side - 3) // 2) + 1  # ceil((side − 3) / 2) + 1
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 500), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
