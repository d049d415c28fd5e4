"""VGG-F (Chatfield et al., "Return of the devil in the details", BMVC 2014), DHCNN's backbone."""

from __future__ import annotations

import torch
from torch import nn

from orbithash.models.alexnet_spp import AdaptiveMaxPool


class VGGF(nn.Module):
    """conv1 64 11×11/4 → LRN → pool, conv2 256 5×5 → LRN → pool, conv3–5 256 3×3 → pool, FC 4096 ×2.

    The "fast" VGG of the paper, at 224×224; pools round up as in MatConvNet/Caffe, so the last
    pool ends at 6×6 as in the paper (PyTorch's default floor would give 5×5). It ends at fc7
    (4096 features); DHCNN puts its hash layer there. No pretrained weights ship with OrbitHash
    (the MatConvNet file is not on PyPI), so it trains from scratch or loads weights a user converts.
    """

    feature_dim = 4096

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4), nn.ReLU(inplace=True), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(64, 256, 5, padding=2), nn.ReLU(inplace=True), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        self.pool = AdaptiveMaxPool(6)  # the identity at 224 px (6×6 map); other sizes are pooled to it
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)))
