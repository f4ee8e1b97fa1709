"""The albumentations-free evaluation transform gives albumentations' values exactly."""

import albumentations as A
import numpy as np
import pytest
import torch
from albumentations.pytorch import ToTensorV2

from clipfuse.data import create_eval_transform

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def albumentations_eval(size: tuple[int, int] | int | None) -> A.Compose:
    """The evaluation pipeline as clipfuse built it with albumentations before."""
    steps: list[A.BasicTransform] = []
    if isinstance(size, int):
        steps.append(A.SmallestMaxSize(max_size=size, p=1.0))
    elif size is not None:
        steps.append(A.Resize(height=size[0], width=size[1], p=1.0))
    normalize = A.Normalize(mean=MEAN, std=STD, max_pixel_value=1.0)
    return A.Compose([*steps, normalize, ToTensorV2()])


@pytest.mark.parametrize("size", [None, (24, 36), (61, 47), 15, 77])
@pytest.mark.parametrize("shape", [(30, 40), (97, 53)])
def test_values_are_albumentations(size, shape) -> None:
    image = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = np.random.default_rng(1).integers(0, 12, shape, dtype=np.uint8)
    ours, our_mask = create_eval_transform(MEAN, STD, size=size)(image, mask)
    reference = albumentations_eval(size)(image=image)["image"]
    assert ours.shape == reference.shape and ours.dtype == reference.dtype
    assert torch.equal(ours, reference)
    assert torch.equal(our_mask, torch.from_numpy(mask.astype(np.int64)))
