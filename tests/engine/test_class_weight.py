"""``train.class_weight: balanced``: ENet's weights of the training set's pixel counts, made a
list once before training and read back, never recounted, when the run is resumed."""

import math

import numpy as np
import pytest
from data_writers import image_array, save

from clipfuse.config import load_config
from clipfuse.data import class_pixel_counts, create_dataset
from clipfuse.engine.class_weight import (
    balanced_class_weights,
    with_resolved_class_weight,
    with_saved_class_weight,
)
from clipfuse.errors import ClipfuseError


def write_long_tail(root):
    """A folder dataset of 3 classes, two train masks of 4 x 5 pixels: 15 of ``wide``, 3 of
    ``pole``, 1 of ``sign`` and 1 ignored each."""
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("wide\npole\nsign\n")
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[1, :3] = 1
    mask[2, 0] = 2
    mask[3, 4] = 255
    for split, stems in {"train": ["a", "b"], "val": ["c"]}.items():
        for index, stem in enumerate(stems):
            save(root / "images" / split / f"{stem}.png", image_array(index, 4, 5))
            save(root / "masks" / split / f"{stem}.png", mask)
    return root


def test_pixel_counts_read_every_train_mask_without_ignored_pixels(tmp_path):
    dataset = create_dataset("folder", "train", root=write_long_tail(tmp_path / "tail"))
    assert class_pixel_counts(dataset) == {"wide": 30, "pole": 6, "sign": 2}


def test_balanced_weights_are_enets_with_mean_one():
    weights = balanced_class_weights([90, 9, 1])
    raw = [1 / math.log(1.02 + p) for p in (0.9, 0.09, 0.01)]
    assert weights == [round(w / (sum(raw) / 3), 4) for w in raw]
    assert weights[0] < weights[1] < weights[2]  # rarer, heavier
    assert sum(weights) / 3 == pytest.approx(1, abs=1e-4)
    with pytest.raises(ClipfuseError, match="no labelled pixel"):
        balanced_class_weights([0, 0])


def test_balanced_is_resolved_from_the_training_set_and_announced(tmp_path, capsys):
    root = write_long_tail(tmp_path / "tail")
    config = load_config(None, ["data.dataset=folder", f"data.root={root}"])
    assert with_resolved_class_weight(config) is config  # null: nothing to resolve
    balanced = load_config(None, ["data.dataset=folder", f"data.root={root}"])
    balanced["train"]["class_weight"] = "balanced"
    resolved = with_resolved_class_weight(balanced)
    assert resolved["train"]["class_weight"] == balanced_class_weights([30, 6, 2])
    assert balanced["train"]["class_weight"] == "balanced"  # the given config is left as it is
    assert "class_weight balanced: ENet weights" in capsys.readouterr().err


def test_a_resume_reads_balanced_as_the_list_the_run_resolved():
    saved = {"train": {"class_weight": [0.5, 1.5]}}
    planned = {"train": {"class_weight": "balanced", "lr": 0.1}}
    assert with_saved_class_weight(planned, saved)["train"] == {
        "class_weight": [0.5, 1.5],
        "lr": 0.1,
    }
    other = {"train": {"class_weight": None}}
    assert with_saved_class_weight(other, saved) is other
