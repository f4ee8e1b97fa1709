"""Cityscapes with fine annotations, 19 evaluation classes.

Layout (``<root>`` holds both packages, ``leftImg8bit_trainvaltest`` and ``gtFine_trainvaltest``)::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Splits: ``train``, ``val``, ``test`` (test labels are all ignore). The 34 ``labelIds`` become
the standard 19 ``trainIds``; every other id becomes 255.
"""

from pathlib import Path

import numpy as np

from clipfuse.data.base import IGNORE_INDEX, SegmentationDataset, Transform, require_dir
from clipfuse.errors import ClipfuseError

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ],
    dtype=np.uint8,
)

LABEL_ID_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
"""The official ``cityscapesscripts`` ``labels.py`` mapping; ids not listed are ignored."""

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

_LABEL_MAP = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_LABEL_MAP[list(LABEL_ID_TO_TRAIN_ID)] = list(LABEL_ID_TO_TRAIN_ID.values())


class Cityscapes(SegmentationDataset):
    """Cityscapes fine: 2,975 train / 500 val / 1,525 test images, 19 classes.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        transform: see :class:`SegmentationDataset`.
    """

    name = "cityscapes"
    fixed_classes = CITYSCAPES_CLASSES
    layout = (
        "<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
        "<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png"
    )
    folder_names = ("cityscapes", "Cityscapes")

    def __init__(
        self, root: str | Path, split: str = "train", transform: Transform | None = None
    ) -> None:
        root = require_dir(Path(root), "Cityscapes root", self.layout)
        image_dir = require_dir(
            root / "leftImg8bit" / split, "Cityscapes image folder", self.layout
        )
        label_dir = require_dir(root / "gtFine" / split, "Cityscapes label folder", self.layout)
        samples = []
        for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
            stem = image.name.removesuffix(IMAGE_SUFFIX)
            label = label_dir / image.parent.name / f"{stem}{LABEL_SUFFIX}"
            if not label.is_file():
                raise ClipfuseError(f"image {image} has no label file: expected {label}")
            samples.append((image, label))
        super().__init__(
            samples, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, transform, where=image_dir
        )

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir()

    def map_labels(self, mask: np.ndarray) -> np.ndarray:
        return _LABEL_MAP[mask]
