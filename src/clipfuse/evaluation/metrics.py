"""Confusion-matrix segmentation metrics (mIoU, mAcc, aAcc) with mmseg's conventions.

All numbers are percentages (0-100). A class with neither ground-truth nor predicted pixels
has a NaN IoU and a class without ground-truth pixels a NaN accuracy; means skip NaNs
(mmseg's ``nanmean``).
"""

import json
import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

SUMMARY_KEYS = ("aAcc", "mIoU", "mAcc")


class SegmentationMetrics(Metric):
    """Accumulates a K x K confusion matrix (rows: ground truth, columns: prediction).

    The ``confmat`` state is summed across processes, so under DDP :meth:`compute` reports
    the metrics of the whole dataset.

    Args:
        num_classes: K, the number of classes; labels are ``0 .. K-1``.
        ignore_index: target value of pixels that are not scored.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: label maps (B x H x W, integer) or logits / probabilities (B x K x H x W,
                reduced by argmax over K).
            target: B x H x W integer labels in ``0 .. K-1`` or ``ignore_index``.

        Raises:
            ValueError: on mismatched shapes, or a label outside ``0 .. K-1`` (other than
                ``ignore_index`` in the target).
        """
        if preds.dim() == target.dim() + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"preds has {preds.shape[1]} channels, expected num_classes={self.num_classes}"
                )
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(
                f"preds shape {tuple(preds.shape)} does not match target shape {tuple(target.shape)}"
            )
        if preds.is_floating_point() or target.is_floating_point():
            raise ValueError("label maps must be integer tensors (pass logits as B x K x H x W)")
        valid = target != self.ignore_index
        labels = target[valid].long()
        predicted = preds[valid].long()
        _check_range(labels, self.num_classes, "target", f" or ignore_index={self.ignore_index}")
        _check_range(predicted, self.num_classes, "preds", "")
        counts = torch.bincount(
            labels * self.num_classes + predicted, minlength=self.num_classes**2
        )
        self.confmat += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, float | Tensor]:
        """The metrics of everything seen so far.

        Returns:
            ``aAcc``, ``mIoU``, ``mAcc`` (floats, percent); ``IoU``, ``Acc`` (K float64
            tensors, percent, NaN where undefined); ``confmat`` (K x K int64, a copy).
        """
        return {**confmat_scores(self.confmat), "confmat": self.confmat.clone()}


def confmat_scores(confmat: Tensor) -> dict[str, float | Tensor]:
    """``aAcc``, ``mIoU``, ``mAcc``, ``IoU``, ``Acc`` (percent) of a K x K confusion matrix
    (rows: ground truth, columns: prediction), as :meth:`SegmentationMetrics.compute`."""
    confmat = confmat.double()
    hits = confmat.diagonal()
    ground_truth = confmat.sum(dim=1)
    predicted = confmat.sum(dim=0)
    iou = hits / (ground_truth + predicted - hits) * 100
    acc = hits / ground_truth * 100
    return {
        "aAcc": (hits.sum() / ground_truth.sum() * 100).item(),
        "mIoU": iou.nanmean().item(),
        "mAcc": acc.nanmean().item(),
        "IoU": iou,
        "Acc": acc,
    }


def _check_range(labels: Tensor, num_classes: int, name: str, also: str) -> None:
    """Raise a ValueError naming the first label outside ``0 .. num_classes-1``."""
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise ValueError(
            f"{name} contains label {int(bad[0])}: expected 0..{num_classes - 1}{also}"
        )


def _check_names(results: dict, class_names: Sequence[str]) -> None:
    if len(class_names) != len(results["IoU"]):
        raise ValueError(f"{len(class_names)} class names given for {len(results['IoU'])} classes")


def format_table(results: dict, class_names: Sequence[str]) -> str:
    """Plain-text table of :meth:`SegmentationMetrics.compute` results.

    One row per class (name, IoU, Acc), then a summary line with aAcc, mIoU and mAcc;
    two decimals, ``nan`` where undefined.
    """
    _check_names(results, class_names)
    width = max(len("class"), *(len(name) for name in class_names))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}"]
    for name, iou, acc in zip(
        class_names, results["IoU"].tolist(), results["Acc"].tolist(), strict=True
    ):
        lines.append(f"{name:<{width}}  {iou:>7.2f}  {acc:>7.2f}")
    lines.append("  ".join(f"{key}: {results[key]:.2f}" for key in SUMMARY_KEYS))
    return "\n".join(lines)


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def results_to_json(results: dict, class_names: Sequence[str]) -> dict:
    """JSON-serialisable form of :meth:`SegmentationMetrics.compute` results.

    ``{"aAcc", "mIoU", "mAcc", "per_class": [{"name", "IoU", "Acc"}, ...]}`` in percent,
    NaN written as ``None`` (``null``); with the confusion matrix (``confmat``, as
    :meth:`SegmentationMetrics.compute` returns it) also ``"confusion"``: K lists of K ints,
    pixel counts, rows = ground truth and columns = prediction, in ``class_names`` order.
    """
    _check_names(results, class_names)
    per_class = [
        {"name": name, "IoU": _finite_or_none(iou), "Acc": _finite_or_none(acc)}
        for name, iou, acc in zip(
            class_names, results["IoU"].tolist(), results["Acc"].tolist(), strict=True
        )
    ]
    summary = {key: _finite_or_none(float(results[key])) for key in SUMMARY_KEYS}
    payload = {**summary, "per_class": per_class}
    if results.get("confmat") is not None:
        payload["confusion"] = results["confmat"].long().tolist()
    return payload


def metrics_json(payload: dict) -> str:
    """``payload`` (e.g. :func:`results_to_json`'s) as indented JSON text, each row of its
    ``confusion`` matrix on one line (a K x K matrix stays K lines long)."""
    confusion = payload.get("confusion")
    if confusion is None:
        return json.dumps(payload, indent=2)
    placeholder = "\x00confusion\x00"
    text = json.dumps({**payload, "confusion": placeholder}, indent=2)
    rows = ",\n".join(f"    {json.dumps(row)}" for row in confusion)
    return text.replace(json.dumps(placeholder), f"[\n{rows}\n  ]", 1)
