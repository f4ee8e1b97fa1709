"""Training and evaluation transforms (albumentations 2.x), mmseg's recipe.

Training: random resize (short side ``base_size`` times a ratio in ``scale_range``, or the
image's own size times that ratio), pad to the crop size (image 0, mask 255), random crop that
retries until no class dominates (``cat_max_ratio``), horizontal flip, photometric distortion,
normalisation, tensors. The evaluation transform is :mod:`clipfuse.data.eval_transform`'s
(numpy and OpenCV only, so that predicting needs no albumentations).

The training transform is a :class:`PairTransform`: a picklable dataset transform
``(image H x W x 3 uint8, mask H x W uint8) -> (image float32 3 x H x W, mask int64 H x W)``.
"""

import os
import random
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check on import

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from clipfuse.data.base import IGNORE_INDEX

BRIGHTNESS_DELTA = 32
"""mmseg ``PhotoMetricDistortion``: brightness +-32, contrast and saturation x[0.5, 1.5], hue +-18
(OpenCV hue units, 0-180), each applied with probability 1/2. Saturation is albumentations'
``ColorJitter`` (a blend with the grey image) where mmseg scales the HSV S channel."""
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18


class CatMaxRatioCrop(A.RandomCrop):
    """A random crop re-drawn (at most ``max_tries`` checks, mmseg ``RandomCrop`` semantics)
    until it holds more than one class and no class covers ``cat_max_ratio`` or more of its
    non-ignored pixels; the last draw is kept when none qualifies.

    The crop itself is albumentations' ``RandomCrop``; only the choice of window is added.
    The image must already be at least the crop size (pad first).
    """

    def __init__(
        self,
        height: int,
        width: int,
        cat_max_ratio: float = 0.75,
        ignore_index: int = IGNORE_INDEX,
        max_tries: int = 10,
        p: float = 1.0,
    ) -> None:
        super().__init__(height=height, width=width, p=p)
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"cat_max_ratio is {cat_max_ratio}: expected 0 < cat_max_ratio <= 1")
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        crop = super().get_params_dependent_on_data(params, data)
        mask = data.get("mask")
        if mask is None or self.cat_max_ratio >= 1:
            return crop
        for _ in range(self.max_tries):
            if self._balanced(mask, crop["crop_coords"]):
                break
            crop = super().get_params_dependent_on_data(params, data)
        return crop

    def _balanced(self, mask: np.ndarray, crop_coords: tuple[int, int, int, int]) -> bool:
        x_min, y_min, x_max, y_max = crop_coords
        counts = np.bincount(mask[y_min:y_max, x_min:x_max].ravel(), minlength=256)
        counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")


class PairTransform:
    """An albumentations pipeline (ending with ``ToTensorV2``) as a dataset transform returning
    tensors.

    :meth:`reseed` sets the random state of the next call; the training loader reseeds it per
    sample (:class:`clipfuse.data.sampling.SeededSamples`), so the augmentations depend on the
    sample's seed only, not on which worker draws them.
    """

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.pipeline(image=image, mask=mask)
        return out["image"], torch.as_tensor(out["mask"]).long()

    def reseed(self, seed: int) -> None:
        """Draw the following augmentations from ``seed`` (one numpy and one Python stream,
        shared by every step of the pipeline)."""
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        return f"PairTransform({self.pipeline!r})"


def _normalize_to_tensor(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0), ToTensorV2()]


def _photometric_distortion() -> A.BaseCompose:
    """mmseg's ``PhotoMetricDistortion``: brightness, then contrast either first or last around
    saturation and hue (each step with probability 1/2)."""

    def contrast() -> A.BasicTransform:
        low, high = CONTRAST_RANGE
        return A.RandomBrightnessContrast(
            brightness_limit=0, contrast_limit=(low - 1, high - 1), p=0.5
        )

    def colour() -> list[A.BasicTransform]:
        return [
            A.ColorJitter(brightness=0, contrast=0, saturation=SATURATION_RANGE, hue=0, p=0.5),
            A.HueSaturationValue(
                hue_shift_limit=HUE_DELTA, sat_shift_limit=0, val_shift_limit=0, p=0.5
            ),
        ]

    delta = BRIGHTNESS_DELTA / 255
    return A.Sequential(
        [
            A.RandomBrightnessContrast(
                brightness_limit=(-delta, delta), contrast_limit=0, brightness_by_max=True, p=0.5
            ),
            A.OneOf(
                [
                    A.Sequential([contrast(), *colour()], p=1.0),
                    A.Sequential([*colour(), contrast()], p=1.0),
                ],
                p=1.0,
            ),
        ],
        p=1.0,
    )


def create_train_transform(
    crop_size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    base_size: int | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    hflip: bool = True,
    photometric: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> PairTransform:
    """The training transform.

    Args:
        crop_size: ``(H, W)`` of the crops.
        mean, std: per-channel normalisation in 0-255 pixel units.
        base_size: short side before scaling; None scales the image's own size.
        scale_range: ``(low, high)``; the scale is drawn uniformly in it.
        cat_max_ratio: largest share of a crop one class may cover (1 turns the check off).
        hflip: random horizontal flip (p = 0.5).
        photometric: mmseg's photometric distortion.
        ignore_index: mask value of the padding (and ignored by the crop check).
    """
    crop_h, crop_w = crop_size
    low, high = scale_range
    if base_size is None:
        resize = A.RandomScale(scale_limit=(low - 1, high - 1), p=1.0)
    else:
        short_sides = list(range(max(1, round(base_size * low)), round(base_size * high) + 1))
        resize = A.SmallestMaxSize(max_size=short_sides, p=1.0)
    steps = [
        resize,
        A.PadIfNeeded(
            min_height=crop_h,
            min_width=crop_w,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=ignore_index,
        ),
        CatMaxRatioCrop(crop_h, crop_w, cat_max_ratio=cat_max_ratio, ignore_index=ignore_index),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if photometric:
        steps.append(_photometric_distortion())
    return PairTransform(A.Compose([*steps, *_normalize_to_tensor(mean, std)]))
