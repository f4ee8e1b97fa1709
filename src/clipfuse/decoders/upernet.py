"""UperNet (Xiao et al., "Unified Perceptual Parsing", ECCV 2018), the paper's Swin-T decoder.

mmseg's ``UPerHead``: a pyramid pooling module on the last level, an FPN over the others,
all levels upsampled to stride 4, concatenated, fused by a 3x3 conv.
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from clipfuse.decoders.common import ConvBNReLU


class PyramidPooling(nn.Module):
    """PSPNet's pooling module: adaptive average pools at several scales, 1x1 conv each."""

    def __init__(self, in_channels: int, channels: int, scales: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(in_channels, channels, 1))
            for s in scales
        )
        self.bottleneck = ConvBNReLU(in_channels + len(scales) * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [
            F.interpolate(stage(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
            for stage in self.stages
        ]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperNet(nn.Module):
    """UperNet head over ``[c2, c3, c4, c5]``; returns logits at stride 4."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.lateral = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels) for _ in in_channels[:-1])
        self.fuse = ConvBNReLU(len(in_channels) * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, features[:-1], strict=True)]
        laterals.append(self.ppm(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        outputs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1], strict=True)]
        outputs.append(laterals[-1])
        size = outputs[0].shape[-2:]
        outputs = [
            o
            if o.shape[-2:] == size
            else F.interpolate(o, size=size, mode="bilinear", align_corners=False)
            for o in outputs
        ]
        return self.classifier(self.dropout(self.fuse(torch.cat(outputs, dim=1))))
