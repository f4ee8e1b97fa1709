"""The training loss of every method (docs/research/method.md Sec. 3), free of Lightning: the
engine and
``clipfuse bench`` compute the same thing, from the config's ``train`` keys through
:func:`loss_arguments`.

The main cross-entropy is plain (``train.loss: ce``) or online hard example mining
(``ohem``, mmsegmentation's ``OHEMPixelSampler`` on the decode head), optionally with class
weights (``train.class_weight``); the auxiliary score-map loss is always a plain, unweighted
cross-entropy, as mmsegmentation samples and weights only the head it is configured on.
"""

from collections.abc import Mapping, Sequence

import torch
from torch.nn import functional as F

from clipfuse.errors import ClipfuseError

# The train keys that are arguments of segmentation_loss (the same names).
LOSS_KEYS = (
    "aux_weight",
    "aux_temperature",
    "loss",
    "class_weight",
    "ohem_thresh",
    "ohem_min_kept",
)


def ohem_labels(
    logits: torch.Tensor,
    masks: torch.Tensor,
    thresh: float,
    min_kept: int,
    ignore_index: int = 255,
) -> torch.Tensor:
    """``masks`` with every pixel OHEM does not keep set to ``ignore_index``.

    As mmsegmentation's ``OHEMPixelSampler``: a labelled pixel is kept when the predicted
    probability of its true class is below ``thresh``, and at least the ``min_kept x B``
    hardest (lowest probability; all of them when there are fewer) are kept whatever their
    probability. mmsegmentation keeps those below the ``min_kept x B``-th lowest probability,
    which differs only at ties and drops the easiest pixel when there are fewer; here the
    count is exact (a stable sort).
    """
    with torch.no_grad():
        valid = masks != ignore_index
        targets = masks.masked_fill(~valid, 0).unsqueeze(1)
        probability = logits.softmax(1).gather(1, targets).squeeze(1)[valid]
        keep = probability < thresh
        hardest = min(min_kept * masks.shape[0], probability.numel())
        if hardest > 0:
            order = probability.sort(stable=True).indices
            keep[order[:hardest]] = True
        kept = torch.zeros_like(valid)
        kept[valid] = keep
    return masks.masked_fill(~kept, ignore_index)


def segmentation_loss(
    outputs: dict[str, torch.Tensor],
    masks: torch.Tensor,
    aux_weight: float = 0.4,
    aux_temperature: float = 0.07,
    ignore_index: int = 255,
    loss: str = "ce",
    class_weight: Sequence[float] | None = None,
    ohem_thresh: float = 0.7,
    ohem_min_kept: int = 100000,
) -> dict[str, torch.Tensor]:
    """``{"loss", "loss_seg"[, "loss_aux"]}``: cross-entropy of the logits plus, where the
    model has a score map and ``aux_weight > 0``, ``aux_weight x CE(up(S / T), y)``.

    ``loss="ohem"`` averages the main cross-entropy over the pixels :func:`ohem_labels` keeps
    (``ohem_thresh``, ``ohem_min_kept`` per image; mmsegmentation divides by every pixel
    instead, a loss scale that follows the kept fraction). ``class_weight`` (K numbers)
    weights the main cross-entropy as ``F.cross_entropy(weight=)`` does: the mean is
    ``sum w_y l / sum w_y`` over the (kept) pixels. The auxiliary loss is neither sampled nor
    weighted.

    Computed in fp32 whatever the autocast dtype (the soft-max of ``S / 0.07`` in bf16 would
    round away the differences between classes).
    """
    with torch.autocast(masks.device.type, enabled=False):
        logits = outputs["logits"].float()
        targets = masks
        if loss == "ohem":
            targets = ohem_labels(logits, masks, ohem_thresh, ohem_min_kept, ignore_index)
        weight = None
        if class_weight is not None:
            weight = torch.as_tensor(class_weight, dtype=torch.float32, device=logits.device)
            # logits of negative names (text.negatives) follow the K classes: never a target
            weight = F.pad(weight, (0, logits.shape[1] - len(weight)), value=1.0)
        loss_seg = F.cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index)
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


def loss_arguments(train: Mapping, class_names: Sequence[str]) -> dict:
    """The keyword arguments of :func:`segmentation_loss` in a config's ``train`` section
    (those it has), for a dataset of ``class_names``: a ``class_weight`` list must have one
    entry per class, and ``balanced`` must have been made concrete before (by
    :func:`clipfuse.engine.class_weight.with_resolved_class_weight`, from the training set)."""
    arguments = {key: train[key] for key in LOSS_KEYS if key in train}
    weight = arguments.get("class_weight")
    if weight == "balanced":
        raise ClipfuseError(
            "config key train.class_weight is 'balanced': expected it resolved to one weight "
            "per class from the training set before the loss is built (clipfuse train does it)"
        )
    if weight is not None and len(weight) != len(class_names):
        shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
        raise ClipfuseError(
            f"config key train.class_weight has {len(weight)} entries: expected "
            f"{len(class_names)}, one per class in label order ({shown})"
        )
    return arguments
