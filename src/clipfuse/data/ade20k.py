"""ADE20K as in the SceneParsing challenge release ``ADEChallengeData2016`` (150 classes).

Layout (``<root>`` is the ``ADEChallengeData2016`` folder)::

    <root>/images/training/*.jpg        <root>/annotations/training/<same stem>.png
    <root>/images/validation/*.jpg      <root>/annotations/validation/<same stem>.png

Split ``train`` is ``training`` and ``val`` is ``validation``. Annotations hold 0 (other /
unlabelled) and 1..150; as mmseg's ``reduce_zero_label``, 0 becomes 255 and the rest lose 1
(255 stays 255).
"""

from pathlib import Path

import numpy as np

from clipfuse.data.base import IGNORE_INDEX, SegmentationDataset, Transform, require_dir
from clipfuse.errors import ClipfuseError

ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

ADE20K_SPLITS = {
    "train": "training",
    "val": "validation",
    "training": "training",
    "validation": "validation",
}

_LABEL_MAP = (np.arange(256) - 1).astype(np.uint8)
_LABEL_MAP[[0, IGNORE_INDEX]] = IGNORE_INDEX


class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing: 20,210 train / 2,000 val images, 150 classes.

    Args:
        root: the ``ADEChallengeData2016`` folder.
        split: ``train`` / ``val`` (or ``training`` / ``validation``).
        transform: see :class:`SegmentationDataset`.
    """

    name = "ade20k"
    fixed_classes = ADE20K_CLASSES
    layout = "<root>/images/<training|validation>/*.jpg and <root>/annotations/<training|validation>/*.png"
    folder_names = ("ADEChallengeData2016", "ade20k", "ade20k/ADEChallengeData2016")

    def __init__(
        self, root: str | Path, split: str = "train", transform: Transform | None = None
    ) -> None:
        if split not in ADE20K_SPLITS:
            raise ClipfuseError(f"ADE20K has no split {split!r}: expected train or val")
        root = require_dir(Path(root), "ADE20K root", self.layout)
        folder = ADE20K_SPLITS[split]
        image_dir = require_dir(root / "images" / folder, "ADE20K image folder", self.layout)
        label_dir = require_dir(
            root / "annotations" / folder, "ADE20K annotation folder", self.layout
        )
        samples = []
        for image in sorted(image_dir.glob("*.jpg")):
            label = label_dir / f"{image.stem}.png"
            if not label.is_file():
                raise ClipfuseError(f"image {image} has no annotation: expected {label}")
            samples.append((image, label))
        super().__init__(samples, ADE20K_CLASSES, None, transform, where=image_dir)

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return (path / "images" / "training").is_dir() or (path / "images" / "validation").is_dir()

    def map_labels(self, mask: np.ndarray) -> np.ndarray:
        return _LABEL_MAP[mask]
