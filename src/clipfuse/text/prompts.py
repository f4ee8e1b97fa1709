"""Prompt templates: filling "a photo of a {}." and averaging over several (docs/research/method.md
Sec. 1).

The shared embedding banks average 85 templates (each embedding L2-normalised, the mean
re-normalised); :func:`embed_prompts` does the same for live CLIP text encoders.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from clipfuse.errors import ClipfuseError

DEFAULT_TEMPLATE = "a photo of a {}."


def template_list(template: str | Sequence[str]) -> list[str]:
    """One template or several as a list; each must contain exactly one ``{}``."""
    templates = [template] if isinstance(template, str) else list(template)
    if not templates:
        raise ClipfuseError("prompt templates: expected at least one template, got none")
    for text in templates:
        if not isinstance(text, str) or text.count("{}") != 1:
            raise ClipfuseError(
                f"prompt template {text!r}: expected a string with exactly one '{{}}' "
                "where the class name goes"
            )
    return templates


def embed_prompts(
    encode_texts: Callable[[list[str]], torch.Tensor],
    names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Mean over templates of the L2-normalised embeddings of ``template`` filled with each
    name, re-normalised (K x dim). ``encode_texts`` embeds a batch of at most ``batch_size``
    prompts."""
    total = None
    for template in templates:
        prompts = [template.replace("{}", name) for name in names]
        chunks = [
            encode_texts(prompts[start : start + batch_size])
            for start in range(0, len(prompts), batch_size)
        ]
        embeddings = F.normalize(torch.cat(chunks).float(), dim=-1)
        total = embeddings if total is None else total + embeddings
    return F.normalize(total / len(templates), dim=-1)
