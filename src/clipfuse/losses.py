"""The training loss of every method (method.md Sec. 3), free of Lightning: the engine and
``clipfuse bench`` compute the same thing."""

import torch
from torch.nn import functional as F


def segmentation_loss(
    outputs: dict[str, torch.Tensor],
    masks: torch.Tensor,
    aux_weight: float = 0.4,
    aux_temperature: float = 0.07,
    ignore_index: int = 255,
) -> dict[str, torch.Tensor]:
    """``{"loss", "loss_seg"[, "loss_aux"]}``: cross-entropy of the logits plus, where the
    model has a score map and ``aux_weight > 0``, ``aux_weight x CE(up(S / T), y)``.

    Computed in fp32 whatever the autocast dtype (the soft-max of ``S / 0.07`` in bf16 would
    round away the differences between classes).
    """
    with torch.autocast(masks.device.type, enabled=False):
        loss_seg = F.cross_entropy(outputs["logits"].float(), masks, ignore_index=ignore_index)
        losses = {"loss": loss_seg, "loss_seg": loss_seg}
        if "score_map" in outputs and aux_weight > 0:
            scores = F.interpolate(
                outputs["score_map"].float() / aux_temperature,
                size=masks.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
            loss_aux = F.cross_entropy(scores, masks, ignore_index=ignore_index)
            losses["loss_aux"] = loss_aux
            losses["loss"] = loss_seg + aux_weight * loss_aux
    return losses
