"""Pieces shared by the attention blocks of the Conv-Former (:mod:`clipfuse.models.convformer`)
and DenseCLIP (:mod:`clipfuse.models.denseclip`): multi-head reshapes and the
[choice] initialisation of docs/research/method.md Sec. 2.
"""

import torch
from torch import nn


def init_weights(module: nn.Module) -> None:
    """The [choice] initialisation of docs/research/method.md Sec. 2, for ``nn.Module.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """B x N x C -> B x heads x N x C/heads."""
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """B x heads x N x d -> B x N x heads*d (heads concatenated)."""
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
