"""Training / evaluation transforms: shapes, dtypes, padding, cat_max_ratio, pickling, seeding."""

import pickle
import random

import numpy as np
import pytest
import torch

from clipfuse.data import create_eval_transform, create_train_transform
from clipfuse.data.transforms import PairTransform

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def seeded(transform: PairTransform, seed: int = 0) -> PairTransform:
    transform.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return transform


def image_and_mask(height: int, width: int, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(height * width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.integers(0, classes, (height, width), dtype=np.uint8)
    return image, mask


def test_train_shapes_and_dtypes() -> None:
    transform = seeded(create_train_transform((32, 48), MEAN, STD))
    for height, width in [(40, 60), (20, 30), (100, 37)]:
        image, mask = transform(*image_and_mask(height, width))
        assert image.shape == (3, 32, 48) and image.dtype == torch.float32
        assert mask.shape == (32, 48) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= set(range(5)) | {255}


def test_padding_is_zero_image_and_ignored_mask() -> None:
    transform = create_train_transform(
        (32, 32), MEAN, STD, scale_range=(1.0, 1.0), hflip=False, photometric=False
    )
    source_image, source_mask = image_and_mask(10, 12)
    image, mask = transform(source_image, source_mask)
    np.testing.assert_array_equal(mask[:10, :12].numpy(), source_mask)
    assert (mask[10:] == 255).all() and (mask[:, 12:] == 255).all()
    padding = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(image[:, 20, 20], padding)
    expected = (
        torch.from_numpy(source_image).permute(2, 0, 1).float() - torch.tensor(MEAN)[:, None, None]
    ) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(image[:, :10, :12], expected)


def test_base_size_sets_the_short_side() -> None:
    image, mask = image_and_mask(20, 40)
    fixed = create_train_transform(
        (16, 32),
        MEAN,
        STD,
        base_size=16,
        scale_range=(1.0, 1.0),
        cat_max_ratio=1.0,
        photometric=False,
    )
    out_image, out_mask = fixed(image, mask)
    assert (out_mask != 255).all() and out_image.shape == (3, 16, 32)
    transform = seeded(
        create_train_transform(
            (100, 100), MEAN, STD, base_size=20, scale_range=(0.5, 2.0), photometric=False
        )
    )
    heights = set()
    for _ in range(30):
        _, out_mask = transform(image, mask)
        valid_rows = int((out_mask != 255).any(1).sum())
        valid_cols = int((out_mask != 255).any(0).sum())
        assert 10 <= valid_rows <= 40 and valid_cols == pytest.approx(2 * valid_rows, abs=1)
        heights.add(valid_rows)
    assert len(heights) > 5


def test_own_size_is_scaled_without_base_size() -> None:
    image, mask = image_and_mask(20, 30)
    transform = seeded(
        create_train_transform((64, 64), MEAN, STD, scale_range=(1.5, 2.0), photometric=False)
    )
    for _ in range(10):
        _, out_mask = transform(image, mask)
        valid_rows = int((out_mask != 255).any(1).sum())
        assert 30 <= valid_rows <= 40


def crafted() -> tuple[np.ndarray, np.ndarray]:
    """64 x 64: the top half is all class 0, the bottom half alternates classes 1 and 2 by column,
    so a 32 x 32 crop starting at row y has class 0 on (32 - y) / 32 of it: below 0.75 only for
    y > 8."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[32:] = 1 + np.arange(64) % 2
    return np.zeros((64, 64, 3), dtype=np.uint8), mask


def largest_share(mask: torch.Tensor) -> float:
    counts = torch.bincount(mask[mask != 255].flatten())
    return float(counts.max() / counts.sum())


@pytest.mark.parametrize(("ratio", "all_balanced"), [(0.75, True), (1.0, False)])
def test_cat_max_ratio(ratio: float, all_balanced: bool) -> None:
    transform = seeded(
        create_train_transform(
            (32, 32), MEAN, STD, scale_range=(1.0, 1.0), cat_max_ratio=ratio, photometric=False
        )
    )
    shares = [largest_share(transform(*crafted())[1]) for _ in range(40)]
    assert all(share < 0.75 for share in shares) == all_balanced


def test_photometric_changes_pixels_but_not_labels() -> None:
    image, mask = image_and_mask(32, 32)
    plain = create_train_transform(
        (32, 32), MEAN, STD, scale_range=(1.0, 1.0), hflip=False, photometric=False
    )
    distorted = seeded(
        create_train_transform((32, 32), MEAN, STD, scale_range=(1.0, 1.0), hflip=False)
    )
    reference_image, reference_mask = plain(image, mask)
    changed = 0
    for _ in range(8):
        out_image, out_mask = distorted(image, mask)
        assert torch.equal(out_mask, reference_mask)
        changed += not torch.allclose(out_image, reference_image)
    assert changed >= 4


def test_eval_resizes_only_the_image() -> None:
    image, mask = image_and_mask(30, 40)
    for size, expected in [(None, (30, 40)), ((24, 36), (24, 36)), (15, (15, 20))]:
        out_image, out_mask = create_eval_transform(MEAN, STD, size=size)(image, mask)
        assert out_image.shape == (3, *expected) and out_image.dtype == torch.float32
        assert out_mask.dtype == torch.int64
        np.testing.assert_array_equal(out_mask.numpy(), mask)
    constant = np.broadcast_to(np.array(MEAN, dtype=np.float32).round().astype(np.uint8), (4, 4, 3))
    out_image, _ = create_eval_transform(MEAN, STD)(
        np.ascontiguousarray(constant), np.zeros((4, 4), np.uint8)
    )
    assert out_image.abs().max() < 0.01


def test_picklable_and_reseeded_per_sample() -> None:
    image, mask = image_and_mask(40, 40)
    evaluation = pickle.loads(pickle.dumps(create_eval_transform(MEAN, STD, size=(20, 20))))
    assert evaluation(image, mask)[0].shape == (3, 20, 20)
    copies = [pickle.loads(pickle.dumps(create_train_transform((24, 24), MEAN, STD)))]
    copies.append(pickle.loads(pickle.dumps(copies[0])))
    outputs = []
    for copy, seed in zip(copies * 2, (1, 1, 2, 1), strict=True):
        copy.reseed(seed)
        outputs.append(copy(image, mask)[0])
    assert torch.equal(outputs[0], outputs[1])  # same seed, another copy (worker): same draw
    assert not torch.equal(outputs[0], outputs[2])  # another seed: another draw
    assert torch.equal(outputs[0], outputs[3])  # reseeding restarts the stream
