"""Predict label maps for image files with a trained checkpoint."""

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipfuse.data import build_eval_transform
from clipfuse.errors import ClipfuseError
from clipfuse.evaluation import InferenceConfig, infer_logits
from clipfuse.models import Segmentor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 H x W x 3; a clear error for a missing or unreadable file."""
    if not path.is_file():
        raise ClipfuseError(f"image {path} not found")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ClipfuseError(
            f"image {path} could not be read: expected a PNG/JPEG/BMP image"
        ) from error


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


class Predictor:
    """Runs a :class:`Segmentor` on full images with the eval transform of its config."""

    def __init__(self, model: Segmentor, config: dict, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = device
        size = config["data"]["val_size"]
        size = tuple(size) if isinstance(size, list) else size
        self.transform = build_eval_transform(
            mean=model.backbone.mean, std=model.backbone.std, size=size
        )
        self.inference = InferenceConfig.from_dict(config["eval"])

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        dummy_mask = np.zeros(image.shape[:2], dtype=np.uint8)
        tensor, _ = self.transform(image, dummy_mask)
        logits_fn = lambda x: self.model(x)["logits"]  # noqa: E731
        probabilities = infer_logits(
            logits_fn,
            tensor.unsqueeze(0).to(self.device),
            num_classes=self.model.num_classes,
            output_size=image.shape[:2],
            **self.inference.as_kwargs(),
        )
        return probabilities[0].argmax(0).cpu().numpy().astype(np.uint8)

    def predict_files(self, paths: list[Path]) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
        for path in paths:
            image = read_image(path)
            yield path, image, self(image)
