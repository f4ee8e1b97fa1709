"""Test-time inference as in mmseg: whole image or sliding window, horizontal flip, multi-scale.

For every scale (and its horizontal flip), the image is resized, predicted, the logits are
resized to the output size, soft-maxed and flipped back; the probabilities are averaged
(mmseg's ``aug_test``).

:func:`infer_probabilities` returns the averaged probabilities at the output size;
:func:`labels_in_strips` computes their argmax a band of output columns at a time from the
views' logits (:func:`view_logits`), so that a large output never holds its K x H x W
probabilities (unless asked for them).
"""

import functools
import itertools
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


def view_logits(
    model_fn: ModelFn,
    images: Tensor,
    num_classes: int,
    mode: str = "whole",
    crop_size: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    precision: str = "auto",
) -> list[list[Tensor]]:
    """The float32 logits of every test-time view, at the view's input size: per scale, the
    resized images' and (``flip``) their horizontal flip's (not flipped back). The arguments
    are :func:`infer_probabilities`'s."""
    if not scales:
        raise ValueError("scales must hold at least one factor")
    if images.dim() != 4:
        raise ValueError(f"images must be B x 3 x H x W, got shape {tuple(images.shape)}")
    input_size = (images.shape[-2], images.shape[-1])
    dtype = inference_dtype(precision, images.device)

    def predict(batch: Tensor) -> Tensor:
        with torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
            if mode == "slide":
                return slide_logits(model_fn, batch, num_classes, crop_size, stride)
            return _predict(model_fn, batch, num_classes)

    views = []
    for scale in scales:
        size = _scaled_size(input_size, scale)
        scaled = images
        if size != input_size:
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        views.append([predict(scaled), *([predict(scaled.flip(-1))] if flip else [])])
    return views


def _average(views: list[list[Tensor]], probabilities: Callable[[Tensor, bool], Tensor]) -> Tensor:
    """The mean over scales of each scale's probabilities plus its flip's:
    ``probabilities(logits, flipped)`` gives a view's, at the output size, flipped back."""
    total = None
    for logits, *flipped in views:
        summed = probabilities(logits, False)
        if flipped:
            summed = summed + probabilities(flipped[0], True)
        total = summed if total is None else total + summed
    count = len(views) * len(views[0])
    return total if count == 1 else total / count  # x / 1 is x: no copy


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
    precision: str = "auto",
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
        precision: ``auto`` (the default, as ``eval.precision``'s: bf16 autocast on a GPU
            with bf16 and on a CPU whose probe measured it faster, else fp32;
            :func:`clipfuse.precision.inference_dtype`), ``32-true`` (fp32, autocast off) or
            ``bf16-mixed`` / ``16-mixed`` (the model under autocast). Resizing and softmax
            stay fp32.

    Returns:
        B x K x output_height x output_width float32 probabilities.

    Raises:
        ValueError: no scales, or logits of the wrong shape.
    """
    views = view_logits(
        model_fn, images, num_classes, mode, crop_size, stride, flip, scales, precision
    )
    size = tuple(output_size) if output_size is not None else tuple(images.shape[-2:])
    return _average(views, functools.partial(_probabilities, size=size))


def _probabilities(logits: Tensor, flipped: bool, size: tuple[int, int]) -> Tensor:
    """A view's probabilities: its logits resized to ``size`` (bilinear, in the NCHW layout:
    torch resizes channels-last tensors by a kernel that rounds otherwise), soft-maxed pixel
    by pixel, flipped back if the view is flipped.

    The softmax runs over the last dimension of a B x H x W x K copy: torch's softmax over
    dimension 1 computes the values of a block's remainder by another route, so a pixel's
    bits there would depend on the tensor's size and the thread count; one row per pixel does
    not (:func:`labels_in_strips` relies on it)."""
    logits = _resized(logits, size)
    pixels = logits.permute(0, 2, 3, 1).contiguous()
    del logits  # freed before the softmax allocates its result
    result = pixels.softmax(dim=-1).permute(0, 3, 1, 2)
    return result.flip(-1) if flipped else result


def _resized(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """``logits`` resized to ``size`` (bilinear, in the NCHW layout)."""
    logits = logits.contiguous()
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


def _resized_view(logits: Tensor, flipped: bool, size: tuple[int, int]) -> Tensor:
    """A view's logits at ``size``, flipped back if the view is flipped: what the argmax of a
    single view needs (the soft-max does not move it)."""
    logits = _resized(logits, size)
    return logits.flip(-1) if flipped else logits


STRIP_BYTES = 16 << 20
"""About the most bytes of one view's float32 logits :func:`labels_in_strips` resizes at once."""

BAND_COLUMNS = 128
"""Bands are a multiple of this many columns wide, the last one at least as wide: torch
resizes to an output of fewer than 128 rows plus columns with another kernel, which rounds
otherwise."""


def labels_in_strips(
    views: list[list[Tensor]],
    output_size: tuple[int, int],
    scores: Tensor | None = None,
    dtype: torch.dtype = torch.int64,
    strip_bytes: int = STRIP_BYTES,
) -> Tensor:
    """The B x H x W argmax (as ``dtype``) of the averaged probabilities of ``views``
    (:func:`view_logits`) at ``output_size``, computed a band of output columns at a time.
    Beside the result, it holds each view's logits resized to the output width (B x K x h x W)
    and, per view, a few copies of about ``strip_bytes`` (at least :data:`BAND_COLUMNS`
    columns' worth). ``scores`` (B x K x H x W float32), when given, receives the
    probabilities.

    Bit for bit what ``infer_probabilities(...).argmax(1)`` gives on the same views (tested
    with torch 2.14 on the CPU): torch's bilinear resize computes each output value from its
    column's weights along the width, then its row's along the height; resizing the width
    first (the height kept), then each band's height (its width kept) does the same
    arithmetic, and the softmax is computed pixel by pixel (:func:`_probabilities`). A single
    view without ``scores`` skips the soft-max (the argmax of its resized logits: the same
    labels, except where two classes' probabilities would round to one float), and the argmax
    runs over channels-last memory: for a light model at 360x480 the soft-max and a plain
    argmax of 11 classes took longer than the network.
    """
    height, width = output_size
    batch, num_classes = views[0][0].shape[:2]
    bands = _bands(width, strip_bytes // (4 * batch * num_classes * height))
    labels = torch.empty((batch, height, width), dtype=dtype, device=views[0][0].device)
    if len(bands) > 1:
        views = [[_resize_width(logits.contiguous(), width) for logits in scale] for scale in views]
    single = scores is None and len(views) == 1 and len(views[0]) == 1
    view = _resized_view if single else _probabilities
    for start, end in bands:

        def band(logits: Tensor, flipped: bool, start: int = start, end: int = end) -> Tensor:
            """The probabilities (a single view's logits) of output columns ``start:end`` (a
            flipped view's: its mirrored columns, flipped back); the whole view's for a single
            band."""
            if len(bands) > 1:
                logits = (
                    logits[..., width - end : width - start] if flipped else logits[..., start:end]
                )
            return view(logits, flipped, (height, end - start))

        probabilities = _average(views, band)
        if scores is not None:
            scores[..., start:end] = probabilities
        # over channels-last memory: torch's argmax over dim 1 of NCHW is far slower on a CPU
        by_pixel = probabilities.contiguous(memory_format=torch.channels_last)
        labels[..., start:end] = by_pixel.argmax(1)
    return labels


def _bands(width: int, columns: int) -> list[tuple[int, int]]:
    """``(start, end)`` column bands about ``columns`` wide (see :data:`BAND_COLUMNS`)."""
    step = max(BAND_COLUMNS, columns // BAND_COLUMNS * BAND_COLUMNS)
    edges = list(range(step, width, step))
    if edges and width - edges[-1] < BAND_COLUMNS:
        edges.pop()
    return list(itertools.pairwise([0, *edges, width]))


def _resize_width(logits: Tensor, width: int) -> Tensor:
    """``logits`` resized to ``width`` columns, their height kept (bilinear)."""
    if logits.shape[-1] == width:
        return logits
    size = (logits.shape[-2], width)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _pair(value: Sequence[int] | None) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class InferenceConfig:
    """How evaluation images are predicted: the keyword arguments of :func:`infer_probabilities`,
    from a config's ``eval`` section (whose values and defaults :mod:`clipfuse.config_schema`
    holds; tests/test_defaults.py keeps these defaults equal to them)."""

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
        """The fields as keyword arguments of :func:`infer_probabilities` and
        :func:`view_logits`."""
        return asdict(self)
