"""Semantic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019).

The decoder of every row in the paper's Table 1: mmseg's ``FPN`` neck followed by its
``FPNHead``, in plain PyTorch (docs/research/method.md Sec. 3).
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from clipfuse.decoders.common import ConvBNReLU, separable_conv
from clipfuse.errors import ClipfuseError


class FPNNeck(nn.Module):
    """1x1 lateral convs, top-down nearest upsampling + add, a 3x3 output conv per level
    (depthwise-separable with ``separable``)."""

    def __init__(
        self, in_channels: Sequence[int], channels: int = 256, separable: bool = False
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(
            separable_conv(channels, channels, linear=True)
            if separable
            else nn.Conv2d(channels, channels, 3, padding=1)
            for _ in in_channels
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        return [conv(x) for conv, x in zip(self.output, laterals, strict=True)]


class FPNHead(nn.Module):
    """Level i gets max(1, i) x [3x3 conv-BN-ReLU (depthwise-separable with ``separable``),
    bilinear x2 if i > 0]; levels are summed."""

    def __init__(
        self,
        num_levels: int,
        in_channels: int,
        channels: int,
        num_classes: int,
        dropout: float,
        separable: bool = False,
    ) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(num_levels):
            layers: list[nn.Module] = []
            for step in range(max(1, level)):
                conv = separable_conv if separable else ConvBNReLU
                layers.append(conv(in_channels if step == 0 else channels, channels))
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        output = self.scale_heads[0](features[0])
        for head, feature in zip(self.scale_heads[1:], features[1:], strict=True):
            upsampled = head(feature)
            if upsampled.shape[-2:] != output.shape[-2:]:
                upsampled = F.interpolate(
                    upsampled, size=output.shape[-2:], mode="bilinear", align_corners=False
                )
            output = output + upsampled
        return self.classifier(self.dropout(output))


class SemanticFPN(nn.Module):
    """FPN neck + FPN head over ``[c2, c3, c4, c5]``; returns logits at stride 4 (at the
    stride of the first level used, with ``levels`` < 4).

    Args:
        in_channels: channels of the four inputs (the last one is ``C + K`` with a language head).
        num_classes: K.
        channels: width of the neck and the head (256 reproduces the paper's 32.7 GMACs).
        dropout: Dropout2d before the classifier.
        separable: depthwise-separable 3x3 convs in the neck's output convs and the head's
            scale heads (MobileNet's block, Howard et al. 2017); False is the paper's decoder.
        levels: use only the last ``levels`` inputs (3: strides 8-32, logits at stride 8).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        dropout: float = 0.1,
        separable: bool = False,
        levels: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(separable, bool):
            raise ClipfuseError(f"SemanticFPN separable must be true or false, got {separable!r}")
        if type(levels) is not int or not 1 <= levels <= len(in_channels):
            raise ClipfuseError(
                f"SemanticFPN levels must be an integer in 1..{len(in_channels)}, got {levels!r}"
            )
        self.levels = levels
        used = list(in_channels)[-levels:]
        self.neck = FPNNeck(used, channels, separable)
        self.head = FPNHead(levels, channels, channels, num_classes, dropout, separable)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.neck(list(features)[-self.levels :]))
