"""A custom dataset in a plain folder: images, PNG masks of class indices, a class list.

Two layouts are read. With one folder per split::

    <root>/classes.txt                 one class name per line; line k (from 0) is class k
    <root>/images/<split>/<stem>.jpg   any of .jpg .jpeg .png .bmp .tif .tiff .webp
    <root>/masks/<split>/<stem>.png    single-channel PNG, same size as the image

or flat folders with split lists (used when ``<root>/splits/<split>.txt`` exists)::

    <root>/classes.txt
    <root>/images/<stem>.jpg
    <root>/masks/<stem>.png
    <root>/splits/<split>.txt          one image stem per line (blank lines and # comments skipped)

Mask values are class indices ``0..K-1``; 255 is ignored (unlabelled pixels). Every image
needs its mask; image stems must be unique within a split. The options ``merge``, ``ignore``
and ``unseen`` relabel the classes (:mod:`clipfuse.data.relabel`).
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clipfuse.data.base import SegmentationDataset, Transform, require_dir, validate_classes
from clipfuse.data.relabel import relabel
from clipfuse.errors import ClipfuseError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLASSES_FILE = "classes.txt"


def read_class_file(path: Path, layout: str) -> list[str]:
    """The names in a ``classes.txt`` (one per line, surrounding whitespace removed)."""
    if not path.is_file():
        raise ClipfuseError(f"class list {path} not found: expected {layout}")
    return [line.strip() for line in path.read_text(encoding="utf-8").rstrip().splitlines()]


def _images_by_stem(folder: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in images:
            raise ClipfuseError(
                f"images {images[path.stem]} and {path} share the stem {path.stem!r}: "
                "expected one image per stem"
            )
        images[path.stem] = path
    return images


def _pair_with_masks(images: list[Path], mask_dir: Path) -> list[tuple[Path, Path]]:
    samples = []
    for image in images:
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise ClipfuseError(f"image {image} has no mask: expected {mask}")
        samples.append((image, mask))
    return samples


def _refuse_orphan_masks(mask_dir: Path, images: dict[str, Path], image_dir: Path) -> None:
    """A mask without an image is a misnamed or missing image: an error, not ignored."""
    orphans = sorted(p for p in mask_dir.glob("*.png") if p.stem not in images)
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise ClipfuseError(
            f"mask {orphans[0]}{more} has no image: expected {image_dir / orphans[0].stem}"
            ".<jpg|png|...> (or remove the mask)"
        )


class FolderDataset(SegmentationDataset):
    """A dataset in the custom folder format described in this module's docstring.

    Args:
        root: the dataset folder (holding ``classes.txt``, ``images/``, ``masks/``).
        split: a split folder name under ``images/`` or a ``splits/<split>.txt`` list.
        transform: see :class:`SegmentationDataset`.
        merge: ``{child: parent}``: the child's pixels get the parent's id
            (:func:`clipfuse.data.relabel.relabel`, as ``ignore`` and ``unseen``).
        ignore: names whose pixels become 255 (neither trained nor scored).
        unseen: names held out as ``ignore`` does, for generalized zero-shot training.

    A subclass with ``fixed_classes`` (a named dataset in this format) requires its
    ``classes.txt`` to list exactly those names.
    """

    name = "folder"
    layout = (
        "<root>/classes.txt, <root>/images/<split>/<stem>.<jpg|png|...> and "
        "<root>/masks/<split>/<stem>.png, or flat <root>/images/ and <root>/masks/ with "
        "<root>/splits/<split>.txt listing stems"
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        merge: Mapping[str, str] | None = None,
        ignore: Sequence[str] | None = None,
        unseen: Sequence[str] | None = None,
    ) -> None:
        root = require_dir(Path(root), "dataset folder", self.layout)
        classes_file = root / CLASSES_FILE
        raw_classes = validate_classes(
            read_class_file(classes_file, self.layout), str(classes_file)
        )
        if self.fixed_classes is not None and raw_classes != self.fixed_classes:
            raise ClipfuseError(
                f"{classes_file} does not list the {len(self.fixed_classes)} classes of "
                f"{self.name} ({', '.join(self.fixed_classes[:4])}, ...): expected that "
                "classes.txt (data.dataset=folder reads any other class list)"
            )
        self.relabeling = relabel(raw_classes, merge, ignore, unseen, source=str(classes_file))
        self.raw_classes = raw_classes
        self.classes_file = classes_file
        self.unseen = self.relabeling.unseen
        classes = self.relabeling.classes
        split_file = root / "splits" / f"{split}.txt"
        if split_file.is_file():
            samples = self._listed_samples(root, split_file)
            where = split_file
        else:
            image_dir = root / "images" / split
            if not image_dir.is_dir():
                raise ClipfuseError(
                    f"split {split!r} of {root} not found: expected the folder {image_dir} or "
                    f"the list {split_file} ({self.layout})"
                )
            images = _images_by_stem(image_dir)
            mask_dir = root / "masks" / split
            samples = _pair_with_masks(list(images.values()), mask_dir)
            _refuse_orphan_masks(mask_dir, images, image_dir)
            where = image_dir
        super().__init__(
            samples, classes, None, transform, where=where, classes_source=str(classes_file)
        )

    def _listed_samples(self, root: Path, split_file: Path) -> list[tuple[Path, Path]]:
        images = _images_by_stem(require_dir(root / "images", "image folder", self.layout))
        listed = []
        for number, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
            stem = line.strip()
            if not stem or stem.startswith("#"):
                continue
            if stem not in images:
                raise ClipfuseError(
                    f"{split_file} line {number} names {stem!r} but {root / 'images'} holds no "
                    f"image with that stem: expected {root / 'images' / stem}.<jpg|png|...>"
                )
            listed.append(images[stem])
        return _pair_with_masks(listed, root / "masks")

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        if not ((path / CLASSES_FILE).is_file() and (path / "images").is_dir()):
            return False
        if cls.fixed_classes is None:
            return True
        return tuple(read_class_file(path / CLASSES_FILE, cls.layout)) == cls.fixed_classes

    @classmethod
    def class_names(cls, **kwargs) -> tuple[str, ...] | None:
        """``fixed_classes`` relabelled by the dataset options ``kwargs``; None without them."""
        if cls.fixed_classes is None:
            return None
        return relabel(cls.fixed_classes, source=f"dataset {cls.name}", **kwargs).classes

    def map_labels(self, mask: np.ndarray) -> np.ndarray:
        return self.relabeling(mask)

    def _bad_values(self, bad: np.ndarray, raw_bad: np.ndarray) -> str:
        """A folder mask holds class indices of ``classes.txt`` (line k is class k): the error
        names the mask's own values against that list (a value past it has no train id)."""
        count = len(self.raw_classes)
        return (
            f"values {raw_bad.tolist()}: expected 0..{count - 1} (the {count} classes of "
            f"{self.classes_file}) or {self.ignore_index} (ignore)"
        )
