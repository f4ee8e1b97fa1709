"""Semantic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019).

The decoder of every row in the paper's Table 1: mmseg's ``FPN`` neck followed by its
``FPNHead``, in plain PyTorch (docs/research/method.md Sec. 3).
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from clipfuse.decoders.common import ConvBNReLU


class FPNNeck(nn.Module):
    """1x1 lateral convs, top-down nearest upsampling + add, a 3x3 output conv per level."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        return [conv(x) for conv, x in zip(self.output, laterals, strict=True)]


class FPNHead(nn.Module):
    """Level i gets max(1, i) x [3x3 conv-BN-ReLU, bilinear x2 if i > 0]; levels are summed."""

    def __init__(
        self, num_levels: int, in_channels: int, channels: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(num_levels):
            layers: list[nn.Module] = []
            for step in range(max(1, level)):
                layers.append(ConvBNReLU(in_channels if step == 0 else channels, channels))
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
    """FPN neck + FPN head over ``[c2, c3, c4, c5]``; returns logits at stride 4.

    Args:
        in_channels: channels of the four inputs (the last one is ``C + K`` with a language head).
        num_classes: K.
        channels: width of the neck and the head (256 reproduces the paper's 32.7 GMACs).
        dropout: Dropout2d before the classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.neck = FPNNeck(in_channels, channels)
        self.head = FPNHead(len(in_channels), channels, channels, num_classes, dropout)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.neck(features))
