"""The real CamVid of ../shared/data/camvid loads through the registry."""

from pathlib import Path

import numpy as np
import pytest
from helpers import require_shared

from clipfuse.data import CamVid, create_dataset

VALID = set(range(11)) | {255}


@pytest.fixture
def camvid_root() -> Path:
    return require_shared("data/camvid")


def test_shared_camvid(camvid_root: Path) -> None:
    train, val = CamVid(camvid_root, "train"), create_dataset("camvid", "val", root=camvid_root)
    assert (len(train), len(val)) == (367, 101)
    assert train.classes == (
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    )  # fmt: skip
    image, mask = train[0]
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8
    assert mask.shape == (360, 480) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= VALID and 255 in np.unique(mask)
    assert train.palette.shape == (11, 3) and tuple(train.palette[0]) == (128, 128, 128)
    for index in (0, len(val) - 1):
        assert set(np.unique(val[index][1])) <= VALID
