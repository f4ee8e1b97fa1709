"""Lite R-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019): MobileNetV3's light
segmentation head, torchvision's ``LRASPPHead`` over the stride-8 map (c3) and the last one.

The last map goes through a 1x1 conv-BN-ReLU gated by a global-pooled sigmoid branch, is
upsampled to stride 8 and classified; a 1x1 classifier on c3 is added. Logits at stride 8.
"""

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.segmentation.lraspp import LRASPPHead

from clipfuse.decoders.common import require_four_maps


class LRASPP(nn.Module):
    """Lite R-ASPP over ``[c2, c3, c4, c5]`` (uses c3 and c5); returns logits at stride 8.

    Args:
        in_channels: channels of the four inputs (the last one is ``C + K`` with a language head).
        num_classes: K.
        inter_channels: width of the high branch (MobileNetV3's 128).
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, inter_channels: int = 128
    ) -> None:
        super().__init__()
        require_four_maps("LRASPP", in_channels)
        self.head = LRASPPHead(in_channels[1], in_channels[3], num_classes, inter_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head({"low": features[1], "high": features[3]})
