"""Images in, label maps out: input reading, the prediction result, and the batched forward pass."""

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from clipfuse.data import create_eval_transform
from clipfuse.data.base import image_to_rgb, to_8bit
from clipfuse.errors import ClipfuseError
from clipfuse.evaluation import InferenceConfig
from clipfuse.evaluation.tta import labels_in_strips, view_logits
from clipfuse.inference.visualize import label_counts, overlay_with_legend

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

ImageInput = str | Path | Image.Image | np.ndarray
"""One image: a file path, a PIL image, or a uint8 / uint16 array (H x W x 3 RGB, H x W x 4
RGBA or H x W grey; 16-bit values are scaled to 8 bits)."""


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 H x W x 3 (EXIF orientation applied, 16-bit scaled to 8 bits); a clear error
    for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise ClipfuseError(f"image {path} not found")
    try:
        with Image.open(path) as image:
            return pil_to_rgb(image, f"image {path}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ClipfuseError(
            f"image {path} could not be read: expected a PNG/JPEG/BMP/TIFF/WebP image"
        ) from error


def pil_to_rgb(image: Image.Image, what: str = "image") -> np.ndarray:
    """A PIL image as RGB uint8 H x W x 3, rotated as its EXIF orientation says (16-bit
    greyscale scaled to 8 bits: see :func:`clipfuse.data.base.image_to_rgb`)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # else it would copy the image
        image = ImageOps.exif_transpose(image)
    return image_to_rgb(image, what)


def as_rgb(image: ImageInput) -> np.ndarray:
    """Any accepted image input as RGB uint8 H x W x 3."""
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16):
            raise ClipfuseError(
                f"image array has dtype {image.dtype}: expected uint8 (0-255) or uint16 "
                "(0-65535) values (e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1])"
            )
        image = to_8bit(image, "image array")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
            raise ClipfuseError(
                f"image array has shape {image.shape}: expected H x W x 3 (RGB), H x W x 4 "
                "(RGBA) or H x W (grey)"
            )
        return np.ascontiguousarray(image[:, :, :3])
    raise ClipfuseError(
        f"cannot predict on a {type(image).__name__}: expected a path, a PIL image or a uint8 "
        "or uint16 numpy array"
    )


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their images (sorted)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(item)
    if not paths:
        raise ClipfuseError("no input images given (or the folders hold none)")
    return paths


@dataclass
class Prediction:
    """The segmentation of one image.

    Attributes:
        label_map: H x W uint8, at the image's size; value k is ``class_names[k]``.
        class_names: the labels predicted, in index order (the trained vocabulary, or the
            ``labels`` asked for, with their display names).
        scores: K x H x W float32 softmax probabilities over ``class_names`` (averaged over
            flips / scales as the model's ``eval`` settings say), or None when not requested.
            In open-vocabulary mode they are ``softmax(S / aux_temperature)`` of the cosine
            score map S.
        palette: K x 3 uint8 colours of ``class_names``.
        image: the RGB uint8 input, H x W x 3.
        mode: ``"decoder"`` (the segmentation head's logits), or in open vocabulary
            ``"score_map"`` (the pixel-text cosine map) or ``"text_classifier"`` (the decoder's
            pixel embeddings against the labels' vectors).
    """

    label_map: np.ndarray
    class_names: list[str]
    scores: np.ndarray | None
    palette: np.ndarray
    image: np.ndarray = field(repr=False)
    mode: str = "decoder"

    @functools.cached_property
    def overlay(self) -> Image.Image:
        """The labels blended over the image, with a legend of the classes present on the right."""
        return overlay_with_legend(self.image, self.label_map, self.class_names, self.palette)

    @property
    def areas(self) -> dict[str, float]:
        """Fraction of the image's pixels given to each class (0-1), in ``class_names`` order."""
        counts = label_counts(self.label_map, len(self.class_names))
        total = max(int(self.label_map.size), 1)
        return {name: float(counts[k]) / total for k, name in enumerate(self.class_names)}


LogitsFn = Callable[[torch.Tensor], torch.Tensor]


class BatchRunner:
    """The evaluation transform and test-time inference of a model's config, on full images.

    Images are resized and normalised exactly as the validation set was during training
    (``data.val_size``, the backbone's mean / std), predicted with the config's ``eval``
    settings (whole / slide, flip, scales), and the probabilities resized back to each image's
    size before the argmax: the labels are those ``clipfuse eval`` scores. The resizing and
    the argmax go a band of columns at a time (:func:`~clipfuse.evaluation.tta.labels_in_strips`),
    so a large image costs the model's working size, its label map and, when asked for, its
    probabilities.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], config: dict) -> None:
        size = config["data"]["val_size"]
        size = tuple(size) if isinstance(size, list | tuple) else size
        self.transform = create_eval_transform(mean=tuple(mean), std=tuple(std), size=size)
        self.inference = InferenceConfig.from_dict(config["eval"])
        # the layout that runs fastest here (ClipfuseModel.to sets it for its device)
        self.channels_last = False

    def run(
        self,
        logits_fn: LogitsFn,
        images: list[np.ndarray],
        num_classes: int,
        device: torch.device,
        batch_size: int = 4,
        scores: bool = True,
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(label map, probabilities or None)`` per image, in order. Consecutive images with
        the same input and output size share a forward pass (at most ``batch_size``)."""
        if batch_size < 1:
            raise ClipfuseError(f"batch_size must be at least 1, got {batch_size}")
        tensors = [self.transform.image(image) for image in images]
        keys = [(tuple(t.shape), image.shape[:2]) for t, image in zip(tensors, images, strict=True)]
        start = 0
        while start < len(images):
            end = start + 1
            while end < len(images) and end - start < batch_size and keys[end] == keys[start]:
                end += 1
            batch = tensors[start:end]
            # one image: a view, not a copy into a fresh batch (a video frame at a time)
            inputs = (batch[0][None] if len(batch) == 1 else torch.stack(batch)).to(device)
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            height, width = images[start].shape[:2]
            with torch.inference_mode():
                views = view_logits(
                    logits_fn, inputs, num_classes=num_classes, **self.inference.as_kwargs()
                )
                probabilities = None
                if scores:
                    probabilities = inputs.new_empty((len(batch), num_classes, height, width))
                labels = labels_in_strips(views, (height, width), probabilities, torch.uint8)
            labels = labels.cpu().numpy()
            probabilities = probabilities.cpu().numpy() if scores else None
            for i in range(len(batch)):
                yield labels[i], (probabilities[i] if probabilities is not None else None)
            start = end


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device of ``device`` (None / "auto": CUDA if available); one-line errors."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ClipfuseError(
            f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClipfuseError(f"device {device}: CUDA is not available on this machine (use 'cpu')")
    return device
