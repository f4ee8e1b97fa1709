"""The language-guided methods train end to end on ADE20K and Cityscapes in their real layouts
(tiny fixtures), with the real CLIP ViT-B/16 text bank for their 150 / 19 class names."""

import pytest
from data_writers import write_ade20k, write_cityscapes
from helpers import require_shared, tiny_config

from clipfuse.engine import train


@pytest.mark.parametrize(
    ("dataset", "writer", "folder", "num_classes"),
    [
        ("ade20k", write_ade20k, "ADEChallengeData2016", 150),
        ("cityscapes", write_cityscapes, "cityscapes", 19),
    ],
)
@pytest.mark.parametrize("method", ["convformer", "denseclip"])
def test_language_methods_train_on_paper_datasets(
    tmp_path, dataset, writer, folder, num_classes, method
):
    require_shared("text/clip-vitb16")
    root = writer(tmp_path / folder)
    config = tiny_config(root, method, max_steps=2, val_every=2)
    config["data"]["dataset"] = dataset
    config["text"]["encoder"] = "bank:shared:text/clip-vitb16"
    results = train(config, tmp_path / "run")
    assert len(results["per_class"]) == num_classes
    assert results["step"] == 2
