"""Image-text fusion: the Conv-Former module and the cosine score map (method.md sections 1-2)."""

from clipfuse.fusion.conv_former import (
    Conv,
    Conv2Former,
    ConvFormer,
    ConvFormerBlock,
    Former,
    Former2Conv,
)
from clipfuse.fusion.score_map import cosine_score_map

__all__ = [
    "Conv",
    "Conv2Former",
    "ConvFormer",
    "ConvFormerBlock",
    "Former",
    "Former2Conv",
    "cosine_score_map",
]
