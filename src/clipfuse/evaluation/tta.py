"""Test-time inference as in mmseg: whole image or sliding window, horizontal flip, multi-scale.

For every scale (and its horizontal flip), the image is resized, predicted, the logits are
resized to the output size, soft-maxed and flipped back; the probabilities are averaged
(mmseg's ``aug_test``).
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from clipfuse.precision import inference_dtype

ModelFn = Callable[[Tensor], Tensor]


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``size`` times ``scale``, rounded as mmcv's ``imrescale`` does."""
    return int(size[0] * scale + 0.5), int(size[1] * scale + 0.5)


def _predict(model_fn: ModelFn, images: Tensor, num_classes: int) -> Tensor:
    """``model_fn(images)`` as float32, checked to be B x K x H x W at the input size."""
    logits = model_fn(images)
    expected = (images.shape[0], num_classes, *images.shape[-2:])
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"model_fn returned logits of shape {tuple(logits.shape)}, expected {expected}"
        )
    return logits.float()


def slide_logits(
    model_fn: ModelFn,
    images: Tensor,
    num_classes: int,
    crop_size: tuple[int, int],
    stride: tuple[int, int],
) -> Tensor:
    """mmseg's ``slide_inference``: logits of overlapping crops, averaged where they overlap.

    Windows start every ``stride`` pixels, the last one is shifted back to end at the border,
    and a crop larger than the image is clamped to it (no padding).
    """
    batch, _, height, width = images.shape
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    grids_h = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    grids_w = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    summed = images.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    count = images.new_zeros((1, 1, height, width), dtype=torch.float32)
    for row in range(grids_h):
        for col in range(grids_w):
            y2 = min(row * stride_h + crop_h, height)
            x2 = min(col * stride_w + crop_w, width)
            y1 = max(y2 - crop_h, 0)
            x1 = max(x2 - crop_w, 0)
            summed[:, :, y1:y2, x1:x2] += _predict(
                model_fn, images[:, :, y1:y2, x1:x2], num_classes
            )
            count[:, :, y1:y2, x1:x2] += 1
    return summed / count


def infer_probabilities(
    model_fn: ModelFn,
    images: Tensor,
    num_classes: int,
    output_size: tuple[int, int] | None = None,
    mode: str = "whole",
    crop_size: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    precision: str = "32-true",
) -> Tensor:
    """Class probabilities of a batch, averaged over scales and flips (mmseg's aug-test).

    Args:
        model_fn: maps B x 3 x h x w images to B x K x h x w logits at the same resolution.
        images: B x 3 x H x W normalised images.
        num_classes: K.
        output_size: (height, width) of the result; default the input size. Logits are
            resized bilinearly (``align_corners=False``) before the softmax.
        mode: ``"whole"`` (one forward pass per image) or ``"slide"`` (sliding window);
            checked, with the window, by the config schema (``eval.mode``).
        crop_size: (height, width) of the sliding window (``mode="slide"`` only).
        stride: (height, width) step of the sliding window (``mode="slide"`` only).
        flip: also predict the horizontally flipped images.
        scales: resize factors of the input; each is predicted and averaged.
        precision: ``32-true`` (fp32, autocast off), ``bf16-mixed`` / ``16-mixed`` (the
            model under autocast) or ``auto`` (bf16 where the device computes it natively,
            :func:`clipfuse.precision.inference_dtype`). Resizing and softmax stay fp32.

    Returns:
        B x K x output_height x output_width float32 probabilities.

    Raises:
        ValueError: no scales, or logits of the wrong shape.
    """
    if not scales:
        raise ValueError("scales must hold at least one factor")
    if images.dim() != 4:
        raise ValueError(f"images must be B x 3 x H x W, got shape {tuple(images.shape)}")
    input_size = (images.shape[-2], images.shape[-1])
    output_size = tuple(output_size) if output_size is not None else input_size
    dtype = inference_dtype(precision, images.device)

    def predict(batch: Tensor) -> Tensor:
        with torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
            if mode == "slide":
                logits = slide_logits(model_fn, batch, num_classes, crop_size, stride)
            else:
                logits = _predict(model_fn, batch, num_classes)
        if logits.shape[-2:] != output_size:
            logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
        return logits.softmax(dim=1)

    total = None
    for scale in scales:
        size = _scaled_size(input_size, scale)
        scaled = images
        if size != input_size:
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        probabilities = predict(scaled)
        if flip:
            probabilities = probabilities + predict(scaled.flip(-1)).flip(-1)
        total = probabilities if total is None else total + probabilities
    return total / (len(scales) * (2 if flip else 1))


def _pair(value: Sequence[int] | None) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class InferenceConfig:
    """How evaluation images are predicted: the keyword arguments of :func:`infer_probabilities`,
    from a config's ``eval`` section (whose values :mod:`clipfuse.config_schema` checks)."""

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    precision: str = "auto"

    def __post_init__(self) -> None:  # YAML's lists as tuples
        object.__setattr__(self, "crop_size", _pair(self.crop_size))
        object.__setattr__(self, "stride", _pair(self.stride))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "InferenceConfig":
        """Build from a config's (validated) ``eval`` section."""
        return cls(**values)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of :func:`infer_probabilities`."""
        return asdict(self)
