"""The dataset base class: reads (image, mask) pairs, maps raw labels to train ids, validates.

Every dataset of :mod:`clipfuse.data` is a :class:`SegmentationDataset` whose subclass only
finds its samples and says how raw mask values become train ids (``map_labels``); reading,
checking and the clear one-line errors live here.
"""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.text.base import normalize_name

IGNORE_INDEX = 255
"""Mask value that losses and metrics ignore, in every dataset."""

Transform = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]
"""``(image H x W x 3 uint8, mask H x W uint8) -> (image, mask)``."""

_INTEGER_MASK_MODES = ("I", "I;16", "I;16B", "I;16L")


def default_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """A deterministic ``K x 3`` uint8 palette (the same colours as ``clipfuse.inference``)."""
    rng = np.random.default_rng(seed)
    return rng.integers(32, 256, size=(num_classes, 3), dtype=np.uint8)


def validate_classes(classes: Sequence[str], source: str) -> tuple[str, ...]:
    """The class names as a tuple; a :class:`ClipfuseError` naming ``source`` when the list is
    empty, longer than 255 (255 is the ignore index), or has an empty or duplicate name (names
    that differ only in case, spaces, underscores or hyphens are duplicates)."""
    names = tuple(classes)
    if not names:
        raise ClipfuseError(f"class list of {source} is empty: expected at least one class name")
    if len(names) > IGNORE_INDEX:
        raise ClipfuseError(
            f"class list of {source} has {len(names)} names: expected at most {IGNORE_INDEX} "
            f"({IGNORE_INDEX} is the ignore index)"
        )
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ClipfuseError(
                f"class {index} of {source} is {name!r}: expected a non-empty class name"
            )
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ClipfuseError(
            f"class list of {source} repeats {', '.join(map(repr, duplicates))}: "
            "expected unique class names"
        )
    _refuse_names_alike(names, source)
    return names


def _refuse_names_alike(names: tuple[str, ...], source: str) -> None:
    """Names that differ only in case, spaces, underscores or hyphens (``sky`` / ``Sky``) are
    one name to ``--labels`` and the text encoders (:func:`clipfuse.text.normalize_name`)."""
    alike: dict[str, list[str]] = {}
    for name in names:
        alike.setdefault(normalize_name(name), []).append(name)
    clashes = [group for group in alike.values() if len(group) > 1]
    if clashes:
        listed = "; ".join(" and ".join(map(repr, group)) for group in clashes)
        raise ClipfuseError(
            f"class list of {source} has names that differ only in case, spaces, underscores "
            f"or hyphens ({listed}): expected names that stay distinct when labels are matched "
            "(rename or merge them)"
        )


def to_8bit(values: np.ndarray, what: str) -> np.ndarray:
    """uint8 intensities as they are; 16-bit ones (uint16, or PIL's integer "I" mode holding
    0..65535) scaled by 255 / 65535, rounded. Values beyond 16 bits are a :class:`ClipfuseError`
    naming ``what``."""
    if values.dtype == np.uint8:
        return values
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ClipfuseError(
            f"{what} has values {values.min()}..{values.max()}: expected 8-bit or 16-bit "
            "intensities (0..65535)"
        )
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def image_to_rgb(image: Image.Image, what: str = "image") -> np.ndarray:
    """A PIL image as RGB uint8 ``H x W x 3``. 16-bit greyscale is scaled to 8 bits (PIL's
    ``convert("RGB")`` would saturate it to white); 32-bit float images are refused."""
    if image.mode.startswith("I"):  # I;16, I;16B, ... and I (32-bit integer)
        grey = to_8bit(np.asarray(image), what)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise ClipfuseError(
            f"{what} holds 32-bit floating-point pixels: expected an 8-bit or 16-bit image"
        )
    return _rgb_pixels(image if image.mode == "RGB" else image.convert("RGB"))


def _rgb_pixels(image: Image.Image, rows: int = 256) -> np.ndarray:
    """The pixels of an RGB image, copied ``rows`` rows at a time (converting the whole image
    at once holds two more copies of it, as bytes: 72 MB more for 12 megapixels)."""
    width, height = image.size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        pixels[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
    return pixels


@contextmanager
def _opened(path: Path, what: str, expected: str) -> Iterator[Image.Image]:
    """``Image.open(path)``; a missing or undecodable file (also while reading its pixels in
    the ``with`` body) as a one-line error naming ``what`` and the ``expected`` format."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError as error:
        raise ClipfuseError(f"{what} {path} not found") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ClipfuseError(
            f"{what} {path} could not be read: expected {expected} ({_reason(error)})"
        ) from error


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as RGB uint8 ``H x W x 3``; a one-line error when unreadable."""
    with _opened(path, "image", "a PNG/JPEG image") as image:
        return image_to_rgb(image, f"image {path}")


def read_mask(path: Path) -> np.ndarray:
    """The single-channel label image at ``path`` as uint8 ``H x W`` (raw values, unmapped)."""
    with _opened(path, "mask", "a single-channel label PNG") as image:
        mode = image.mode
        if mode in ("L", "P"):
            return np.array(image)
        if mode not in _INTEGER_MASK_MODES:
            raise ClipfuseError(
                f"mask {path} has mode {mode}: expected a single-channel 8-bit label PNG"
            )
        values = np.array(image)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ClipfuseError(
            f"mask {path} has values {values.min()}..{values.max()}: expected labels in 0..255"
        )
    return values.astype(np.uint8)


def read_palette_strip(path: Path, num_classes: int) -> np.ndarray:
    """The first ``num_classes`` colours of a ``1 x N`` RGB palette strip image."""
    strip = read_rgb(path)
    if strip.shape[1] < num_classes:
        raise ClipfuseError(
            f"palette {path} has {strip.shape[1]} colours: expected at least {num_classes}"
        )
    return strip[0, :num_classes].copy()


def require_dir(path: Path, what: str, layout: str) -> Path:
    """``path`` if it is a folder, else an error naming it and the expected layout."""
    if not path.is_dir():
        raise ClipfuseError(f"{what} {path} not found: expected {layout}")
    return path


def _reason(error: BaseException) -> str:
    """Why an image could not be read, in a few words."""
    if isinstance(error, UnidentifiedImageError):
        return "unrecognised file format"
    return one_line(error)


def _header_problem(image_path: Path, mask_path: Path) -> str | None:
    """What is wrong with a sample's files as far as their headers tell, or None."""
    sizes = []
    for path, what in ((image_path, "image"), (mask_path, "mask")):
        try:
            with Image.open(path) as opened:
                sizes.append(opened.size)
                mode = opened.mode
        except FileNotFoundError:
            return f"{what} {path} not found"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            return f"{what} {path} could not be read ({_reason(error)})"
        if what == "mask" and mode not in ("L", "P", *_INTEGER_MASK_MODES):
            return f"mask {path} has mode {mode}: expected a single-channel label PNG"
    (iw, ih), (mw, mh) = sizes
    if (iw, ih) != (mw, mh):
        return f"mask {mask_path} is {mw}x{mh} but image {image_path} is {iw}x{ih}"
    return None


SUBSET_SEED = 0  # draws the images data.train_images keeps


class SegmentationDataset(Dataset):
    """``(image, mask)`` pairs read from disk, masks mapped to train ids ``0..K-1`` and 255.

    Subclasses find their samples and override :meth:`map_labels`; they also describe their
    on-disk layout (``layout``), the folder names the registry looks for (``folder_names``)
    and how to recognise a dataset folder (:meth:`looks_like`).

    Args:
        samples: ``(image path, mask path)`` pairs.
        classes: the ``K`` class names (train id ``k`` is ``classes[k]``).
        palette: ``K x 3`` uint8 colours, or None for :func:`default_palette`.
        transform: ``(image, mask) -> (image, mask)`` applied to the numpy arrays; None returns
            the arrays (image ``H x W x 3`` uint8, mask ``H x W`` uint8).
        where: the file or folder the samples came from (named when there are none).
        classes_source: where the class names came from (named when they are invalid).
    """

    name: ClassVar[str] = "segmentation"
    layout: ClassVar[str] = "(image, mask) pairs"
    folder_names: ClassVar[tuple[str, ...]] = ()
    fixed_classes: ClassVar[tuple[str, ...] | None] = None  # known without the data on disk
    ignore_index: ClassVar[int] = IGNORE_INDEX

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path]],
        classes: Sequence[str],
        palette: np.ndarray | None = None,
        transform: Transform | None = None,
        where: Path | None = None,
        classes_source: str | None = None,
    ) -> None:
        self.classes = validate_classes(classes, classes_source or f"dataset {self.name}")
        if not samples:
            raise ClipfuseError(
                f"{where or 'dataset'} holds no {self.name} samples: expected {self.layout}"
            )
        self.samples: list[tuple[Path, Path]] = [(Path(i), Path(m)) for i, m in samples]
        self.where = where
        if palette is None:
            palette = default_palette(len(self.classes))
        palette = np.asarray(palette)
        if palette.shape != (len(self.classes), 3):
            raise ClipfuseError(
                f"palette of dataset {self.name} has shape {palette.shape}: "
                f"expected ({len(self.classes)}, 3)"
            )
        self.palette = palette.astype(np.uint8)
        self.transform = transform

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        """Whether ``path`` is a folder of this dataset (used by the registry's search)."""
        return False

    @classmethod
    def class_names(cls, **kwargs) -> tuple[str, ...] | None:
        """The class names known without the data on disk (``fixed_classes``), or None."""
        return cls.fixed_classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def map_labels(self, mask: np.ndarray) -> np.ndarray:
        """Raw mask values to train ids (uint8, 255 = ignore). The base class keeps them."""
        return mask

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` untransformed: RGB ``H x W x 3`` uint8 and train ids ``H x W`` uint8."""
        image_path, mask_path = self.samples[index]
        image = read_rgb(image_path)
        raw = read_mask(mask_path)
        if raw.shape != image.shape[:2]:
            (ih, iw), (mh, mw) = image.shape[:2], raw.shape
            raise ClipfuseError(
                f"mask {mask_path} is {mw}x{mh} but image {image_path} is {iw}x{ih}: "
                "expected the same size"
            )
        mask = self.map_labels(raw)
        self._check_labels(mask, raw, mask_path)
        return image, mask

    def check_files(self) -> None:
        """Read the header of every image and mask (cheap: no pixels are decoded) and raise
        one :class:`ClipfuseError` listing every unreadable file, mask of the wrong mode and
        image / mask pair of different sizes, instead of failing on the first one mid-epoch.
        Mask values are checked when a mask is loaded."""
        problems = [
            problem for image, mask in self.samples if (problem := _header_problem(image, mask))
        ]
        if problems:
            more = "; ".join(problems[:20]) + (
                f"; ... {len(problems) - 20} more" if len(problems) > 20 else ""
            )
            raise ClipfuseError(
                f"dataset {self.name}: {len(problems)} of {len(self.samples)} samples are bad: {more}"
            )

    def _check_labels(self, mask: np.ndarray, raw: np.ndarray, path: Path) -> None:
        counts = np.bincount(mask.ravel(), minlength=256)
        bad = np.flatnonzero(counts[self.num_classes : self.ignore_index]) + self.num_classes
        if bad.size == 0:
            return
        raw_bad = np.unique(raw[np.isin(mask, bad)])
        raise ClipfuseError(f"mask {path} has {self._bad_values(bad, raw_bad)}")

    def _bad_values(self, bad: np.ndarray, raw_bad: np.ndarray) -> str:
        """What the error on a mask with values that are no class says after "mask X has":
        the train ids :meth:`map_labels` gave (with the raw values they come from, when these
        differ: ADE20K's ids are its values less one) and what was expected."""
        origin = "" if np.array_equal(raw_bad, bad) else f" (raw values {raw_bad.tolist()})"
        return (
            f"label values {bad.tolist()}{origin}: expected 0..{self.num_classes - 1} or "
            f"{self.ignore_index} (ignore) for the {self.num_classes} classes of {self.name}"
        )

    def __len__(self) -> int:
        return len(self.samples)

    def keep_images(self, count: int | None) -> None:
        """Keep ``count`` of the samples (``data.train_images``, few-label training): the
        first ``count`` of one fixed permutation (seed :data:`SUBSET_SEED`, whatever the run
        seed), in file order, so every method and seed trains on the same images and a smaller
        subset lies inside a larger one (10 of them inside 25, inside 100). None keeps all."""
        if count is None:
            return
        if not 0 < count <= len(self.samples):
            raise ClipfuseError(
                f"data.train_images is {count}: expected 1 to {len(self.samples)}, the number "
                f"of training images of dataset {self.name}"
            )
        kept = np.random.default_rng(SUBSET_SEED).permutation(len(self.samples))[:count]
        self.samples = [self.samples[i] for i in sorted(kept)]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.load(index)
        if self.transform is None:
            return image, mask
        return self.transform(image, mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes)"
