"""The aurora paper's Im-AlexNet-SP: AlexNet convs → power-mean transformation → spatial pyramid pooling.

PMT formula used here: for the non-negative (post-ReLU) conv5 map x,
    PMT(x) = concat_channels( log(x + β), (x + β)^α ),  α = 0.5, β = 1.
Source: the power-mean transformation for CNN features (a log branch and a power branch, which
bend the activations' distribution towards a Gaussian-like one before pooling) as the aurora
paper cites it. We could not consult the paper text offline while writing this, so α, β and
the placement (after conv5, before SPP) are our reading and must be checked against the paper
before any figure from this network is quoted as the paper's method.
SPP (He et al., ECCV 2014): max pooling over 1×1, 2×2 and 4×4 grids, concatenated, so any input
size gives a fixed-length vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PowerMeanTransform(nn.Module):
    """x ≥ 0 → [log(x + β), (x + β)^α] along channels (doubles the channel count)."""

    def __init__(self, alpha: float = 0.5, beta: float = 1.0) -> None:
        super().__init__()
        if not 0 < alpha < 1 or beta <= 0:
            raise ValueError(f"PMT needs 0 < alpha < 1 and beta > 0, got {alpha}, {beta}")
        self.alpha, self.beta = alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x.clamp(min=0) + self.beta
        return torch.cat([torch.log(shifted), shifted.pow(self.alpha)], dim=1)


def _bins(size: int, n: int) -> list[tuple[int, int]]:
    """Bin i of n over ``size`` cells: [⌊i·size/n⌋, ⌈(i+1)·size/n⌉), PyTorch's adaptive pooling bins."""
    return [((i * size) // n, -(-(i + 1) * size // n)) for i in range(n)]


class AdaptiveMaxPool(nn.Module):
    """``nn.AdaptiveMaxPool2d(n)`` that also exports to ONNX when n does not divide the map.

    The TorchScript exporter refuses adaptive max pooling unless the output size divides the
    input size (AlexNet's 13×13 conv5 map at 224 px into SPP's 2×2 and 4×4 levels, VGG-F's map
    at other input sizes). The served model has a fixed input size, so the bins are known when
    the graph is traced: pool each band of rows, then each band of columns (a rectangle's max is
    the max of its row maxima): the same arithmetic with plain slices and ReduceMax.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % self.n == 0 and w % self.n == 0:
            return F.adaptive_max_pool2d(x, self.n)
        rows = torch.cat([x[..., a:b, :].amax(dim=-2, keepdim=True) for a, b in _bins(h, self.n)], dim=-2)
        return torch.cat([rows[..., a:b].amax(dim=-1, keepdim=True) for a, b in _bins(w, self.n)], dim=-1)


class SpatialPyramidPool(nn.Module):
    """Max pooling over an n×n grid for every level n, flattened and concatenated."""

    def __init__(self, levels: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.pools = nn.ModuleList(AdaptiveMaxPool(n) for n in self.levels)

    def out_features(self, channels: int) -> int:
        return channels * sum(n * n for n in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x).flatten(1) for p in self.pools], dim=1)


class AlexNetSPP(nn.Module):
    """AlexNet conv1–5 → PMT → SPP(1, 2, 4) → FC 4096 → FC 4096 (features for the hash layer).

    The hash layer then sits between fc7 and the classifier, as in the paper (``HashHead``).
    """

    feature_dim = 4096

    def __init__(self, levels: Sequence[int] = (1, 2, 4), pmt: PowerMeanTransform | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pmt = pmt or PowerMeanTransform()
        self.spp = SpatialPyramidPool(levels)
        self.fc = nn.Sequential(
            nn.Linear(self.spp.out_features(2 * 256), 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.spp(self.pmt(self.features(x))))
