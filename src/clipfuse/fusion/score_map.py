"""The cosine score map of paper Eq. 2 (method.md sections 1 and 3)."""

import torch
import torch.nn.functional as F


def cosine_score_map(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``S = <l2norm(I), l2norm(T)>`` over channels, without temperature.

    ``image`` B x C x h x w, ``text`` B x K x C (per image) or K x C (shared) -> B x K x h x w
    with values in [-1, 1].
    """
    image = F.normalize(image, dim=1)
    text = F.normalize(text, dim=-1)
    if text.dim() == 2:
        return torch.einsum("bchw,kc->bkhw", image, text)
    return torch.einsum("bchw,bkc->bkhw", image, text)
