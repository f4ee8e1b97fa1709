"""Building blocks shared by the decoders."""

from collections.abc import Sequence

from torch import nn

from clipfuse.errors import ClipfuseError


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU, mmseg's ``ConvModule`` with BN."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: int = 1,
        stride: int = 1,
    ) -> None:
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        )
        super().__init__(
            conv,
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def separable_conv(in_channels: int, out_channels: int, linear: bool = False) -> nn.Sequential:
    """A depthwise-separable 3x3 conv (Howard et al., "MobileNets: Efficient Convolutional Neural
    Networks for Mobile Vision Applications", 2017): depthwise 3x3 conv-BN-ReLU, then pointwise
    1x1 conv-BN-ReLU, or with ``linear`` a plain 1x1 conv with bias (for a conv that had no
    norm or activation, e.g. the FPN neck's output convs)."""
    depthwise = ConvBNReLU(in_channels, in_channels, 3, groups=in_channels)
    if linear:
        return nn.Sequential(depthwise, nn.Conv2d(in_channels, out_channels, 1))
    return nn.Sequential(depthwise, ConvBNReLU(in_channels, out_channels, 1))


def require_four_maps(decoder: str, in_channels: Sequence[int]) -> None:
    """A one-line error unless ``in_channels`` describes the four maps ``[c2, c3, c4, c5]``."""
    if len(in_channels) != 4:
        raise ClipfuseError(f"{decoder} needs [c2, c3, c4, c5], got {len(in_channels)} maps")
