"""The LSeg-style text classifier: class logits as the cosine similarity of the decoder's pixel
embeddings with the class text vectors (``model.text_classifier``).

Language-guided methods end in the decoder's 1x1 classification conv, one output per trained
class, so a new name can only be read from the stride-32 score map of the language head. With
``model.text_classifier: true`` that conv outputs ``Ct`` channels instead (the pixel embeddings
projected to the text width), and the logits are ``exp(logit_scale) * cos(pixel, text_k)``
for the frozen class vectors ``text_k`` (the language head's ``text_embeddings``, CLIP's
vectors as the encoder gave them), as LSeg does (Li et al., ICLR 2022). Any K' x Ct vectors
can be passed instead: new names are queried through the decoder's quality.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp of its learnable temperature


class TextClassifier(nn.Module):
    """``(B x Ct x h x w pixel embeddings, K x Ct text) -> B x K x h x w`` logits.

    Args:
        temperature: the initial temperature (``logit_scale = log(1 / temperature)``, learned).
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pixels = F.normalize(pixels, dim=1)
        text = F.normalize(text.to(pixels.dtype), dim=-1)
        scale = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        return scale * torch.einsum("bchw,kc->bkhw", pixels, text)
