"""Cost analysis: GMACs and parameters per part of a model."""

from clipfuse.analysis.flops import count_macs, count_params
from clipfuse.models import Segmentor


def segmentor_cost(model: Segmentor, height: int, width: int) -> dict:
    """GMACs and parameters of one image at ``height x width``, split into backbone /
    fusion (the language head: Conv-Former or DenseCLIP's pool and context decoder) / decoder.

    The text encoder is not included: it runs once per vocabulary, not per image.
    """
    groups = {"backbone": model.backbone, "decoder": model.decoder}
    if model.head is not None:
        groups["fusion"] = model.head
    return count_macs(model, (1, 3, height, width), groups=groups)


__all__ = ["count_macs", "count_params", "segmentor_cost"]
