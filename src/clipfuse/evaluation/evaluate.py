"""Evaluate a model over a data loader: inference plus confusion-matrix metrics."""

from collections.abc import Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from clipfuse.evaluation.inference import InferenceConfig, ModelFn, infer_logits
from clipfuse.evaluation.metrics import SegmentationMetrics


@torch.inference_mode()
def evaluate(
    model_fn: ModelFn,
    loader: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    inference: InferenceConfig,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Metrics of ``model_fn`` over every batch of ``loader``.

    Args:
        model_fn: maps B x 3 x h x w images to B x K x h x w logits (put a module in
            ``eval()`` mode first).
        loader: yields ``(images, masks)``: B x 3 x h x w normalised images and B x H x W
            masks at the original resolution (ignore 255); the probabilities are resized
            to the masks' size before the argmax.
        num_classes: K.
        inference: whole / sliding window, flip, scales.
        device: where images, masks and the metric state live.
        progress: show a tqdm progress bar.

    Returns:
        :meth:`SegmentationMetrics.compute` of all batches.
    """
    metrics = SegmentationMetrics(num_classes).to(device)
    for images, masks in tqdm(loader, desc="eval", unit="batch", disable=not progress):
        masks = masks.to(device)
        probabilities = infer_logits(
            model_fn,
            images.to(device),
            num_classes,
            output_size=tuple(masks.shape[-2:]),
            **inference.as_kwargs(),
        )
        metrics.update(probabilities.argmax(dim=1), masks)
    return metrics.compute()
