"""Decoders over ``[c2, c3, c4, c5]`` returning logits (stride 4 or 8, the Segmentor upsamples
them to the input); ``create_decoder`` by name."""

from collections.abc import Sequence

from torch import nn

from clipfuse.decoders.lraspp import LRASPP
from clipfuse.decoders.semantic_fpn import SemanticFPN
from clipfuse.decoders.smp_fpn import SmpFPN
from clipfuse.decoders.upernet import UperNet
from clipfuse.errors import ClipfuseError

DECODERS: dict[str, type[nn.Module]] = {
    "fpn": SemanticFPN,
    "upernet": UperNet,
    "lraspp": LRASPP,
    "smp_fpn": SmpFPN,
}


def create_decoder(name: str, in_channels: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Build a decoder by name (``fpn``, ``upernet``, ``lraspp`` or ``smp_fpn``); kwargs go to its
    constructor."""
    if name not in DECODERS:
        raise ClipfuseError(f"unknown decoder {name!r}: expected one of {', '.join(DECODERS)}")
    return DECODERS[name](in_channels, num_classes, **kwargs)


__all__ = ["DECODERS", "LRASPP", "SemanticFPN", "SmpFPN", "UperNet", "create_decoder"]
