"""The cosine score map of paper Eq. 2 (docs/research/method.md Sec. 1 and 3)."""

import torch
import torch.nn.functional as F


def cosine_score_map(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``S = <l2norm(I), l2norm(T)>`` over channels, without temperature.

    ``image`` B x C x h x w, ``text`` B x K x C (per image) or K x C (shared) -> B x K x h x w
    with values in [-1, 1]. Always computed in fp32 (autocast off): it is small, and the
    auxiliary loss divides it by a temperature of 0.07.
    """
    with torch.autocast(image.device.type, enabled=False):
        image = F.normalize(image.float(), dim=1)
        text = F.normalize(text.float(), dim=-1)
        if text.dim() == 2:
            return torch.einsum("bchw,kc->bkhw", image, text)
        return torch.einsum("bchw,bkc->bkhw", image, text)
