"""Validation and ``clipfuse eval`` batch images of different sizes (issue 24): each size is
predicted at its own, so the metrics do not depend on ``data.val_batch_size``."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image

from clipfuse.data.collate import SizeGroups, collate_by_size
from clipfuse.engine import evaluate, train

CLASSES = ("sky", "road", "car")
# Batches of 3: [40x48, 44x48, 40x48] (two sizes), [40x48, 36x52, 44x48] (three).
VAL_SIZES = [(40, 48), (44, 48), (40, 48), (40, 48), (36, 52), (44, 48)]


def write_mixed_sizes(root: Path) -> Path:
    """The folder layout with val images of several sizes: colour bands and their labels."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(len(CLASSES), 3))
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    splits = {"train": [(40, 48)] * 4, "val": VAL_SIZES}
    for split, sizes in splits.items():
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True)
        for index, (height, width) in enumerate(sizes):
            mask = np.zeros((height, width), dtype=np.uint8)
            cuts = sorted(rng.choice(np.arange(4, height - 4), len(CLASSES) - 1, replace=False))
            for k, cut in enumerate(cuts, start=1):
                mask[cut:] = k
            mask[0, :3] = 255
            noise = rng.integers(-40, 40, (height, width, 3))
            image = colours[mask.clip(0, len(CLASSES) - 1)] + noise
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / "images" / split / f"{index:03d}.png"
            )
            Image.fromarray(mask).save(root / "masks" / split / f"{index:03d}.png")
    return root


def test_collate_groups_samples_by_image_and_mask_size():
    samples = [
        (torch.full((3, 8, 8), 0.0), torch.zeros(10, 12, dtype=torch.long)),
        (torch.full((3, 8, 8), 1.0), torch.zeros(11, 12, dtype=torch.long)),  # same input size
        (torch.full((3, 6, 8), 2.0), torch.zeros(6, 8, dtype=torch.long)),
        (torch.full((3, 8, 8), 3.0), torch.ones(10, 12, dtype=torch.long)),
    ]
    batch = collate_by_size(samples)
    assert isinstance(batch, SizeGroups)
    shapes = [(tuple(images.shape), tuple(masks.shape)) for images, masks in batch.groups]
    assert shapes == [((2, 3, 8, 8), (2, 10, 12)), ((1, 3, 8, 8), (1, 11, 12)),
                      ((1, 3, 6, 8), (1, 6, 8))]  # fmt: skip
    assert batch.groups[0][0][:, 0, 0, 0].tolist() == [0.0, 3.0]  # order kept within a size
    assert batch.groups[0][1][:, 0, 0].tolist() == [0, 1]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    data = write_mixed_sizes(root / "data")
    # Training validates the mixed sizes at val_batch_size 2: before issue 24, a stack error.
    config = tiny_config(data, max_steps=6, val_every=6, precision="32-true")
    config["eval"]["precision"] = "32-true"
    train(config, root / "run")
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("val_size", ["null", "[32, 40]", "36"])
def test_metrics_do_not_depend_on_the_validation_batch_size(mixed_run, val_size):
    def metrics(batch_size: int) -> dict:
        overrides = [f"data.val_batch_size={batch_size}", f"data.val_size={val_size}"]
        return evaluate(mixed_run, overrides, quiet=True)

    one = metrics(1)
    assert one["mIoU"] > 0 and len({row["IoU"] for row in one["per_class"]}) > 1
    assert metrics(3) == one
