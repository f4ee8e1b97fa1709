"""Building blocks shared by the decoders."""

from torch import nn


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
