"""segmentation_models_pytorch's FPN decoder (Kirillov et al.'s Panoptic FPN head as smp builds
it: GroupNorm, 256-channel pyramid, 128-channel segmentation branches summed, dropout 0.2).

The outside reference point of the speed / accuracy frontier (docs/research/speed.md): smp's
``FPN`` on the same backbone and weights as ours, trained by the same engine and recipe, so
what differs from :class:`~clipfuse.decoders.SemanticFPN` is only the decoder. smp's modules
and initialisation are used as they are; the classifier is smp's ``SegmentationHead`` without
its upsampling (the Segmentor resizes the logits). Needs segmentation_models_pytorch (the
``bench`` extra).
"""

from collections.abc import Sequence

import torch
from torch import nn

from clipfuse.decoders.common import require_four_maps
from clipfuse.errors import ClipfuseError
from clipfuse.extras import require


class SmpFPN(nn.Module):
    """smp's ``FPNDecoder`` + ``SegmentationHead`` over ``[c2, c3, c4, c5]``; logits at stride 4.

    As in smp, each map must be exactly twice the size of the next (inputs divisible by 32).

    Args:
        in_channels: channels of the four inputs (the last one is ``C + K`` with a language head).
        num_classes: K.
        pyramid_channels: width of the pyramid (smp's ``decoder_pyramid_channels``).
        segmentation_channels: width of the segmentation branches (a multiple of 32: GroupNorm).
        dropout: smp's ``decoder_dropout``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        require_four_maps("smp_fpn", in_channels)
        require("segmentation_models_pytorch", "decoder smp_fpn")
        from segmentation_models_pytorch.base import SegmentationHead, initialization
        from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

        self.decoder = FPNDecoder(
            list(in_channels), 3, pyramid_channels, segmentation_channels, dropout
        )
        self.head = SegmentationHead(segmentation_channels, num_classes, kernel_size=1)
        initialization.initialize_decoder(self.decoder)
        initialization.initialize_head(self.head)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        sizes = [tuple(f.shape[-2:]) for f in features]
        if any((2 * h, 2 * w) != size for (h, w), size in zip(sizes[1:], sizes, strict=False)):
            raise ClipfuseError(
                f"smp_fpn needs each feature map twice the size of the next (an input divisible "
                f"by 32), got maps of {', '.join(f'{h}x{w}' for h, w in sizes)}"
            )
        return self.head(self.decoder(list(features)))
