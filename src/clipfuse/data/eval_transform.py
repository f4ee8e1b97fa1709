"""The evaluation transform, with numpy and OpenCV only (no albumentations), so that loading a
model and predicting need no training extra.

Resize the image only (the mask keeps full resolution; the evaluator upsamples logits to it),
normalise, tensors: value for value what albumentations 2.x gives for ``Resize`` /
``SmallestMaxSize`` (bilinear), ``Normalize(max_pixel_value=1)`` and ``ToTensorV2`` (the
training transforms, :mod:`clipfuse.data.transforms`, stay albumentations'), which the suite
checks against albumentations.
"""

from collections.abc import Sequence

import cv2
import numpy as np
import torch


class EvalTransform:
    """``(image H x W x 3 uint8, mask H x W uint8) -> (image float32 3 x h x w, mask int64
    H x W)``: the image resized to ``size`` (``(H, W)``, or the short side when an int; None
    keeps it) and normalised by ``mean`` / ``std`` (0-255 units); the mask untouched."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        size: tuple[int, int] | int | None = None,
    ) -> None:
        self.size = size
        # a lookup table per channel, as albumentations normalises uint8 images (float32)
        values = np.arange(256, dtype=np.float32)
        mean_np = np.array(mean, dtype=np.float32).reshape(-1, 1)
        scale = np.reciprocal(np.array(std, dtype=np.float32)).reshape(-1, 1)
        self.table = (values - mean_np) * scale

    def _target(self, height: int, width: int) -> tuple[int, int]:
        if self.size is None:
            return height, width
        if isinstance(self.size, int):
            scale = self.size / min(height, width)
            return max(1, round(height * scale)), max(1, round(width * scale))
        return self.size[0], self.size[1]

    def image(self, image: np.ndarray) -> torch.Tensor:
        """The transformed image (3 x h x w float32)."""
        target = self._target(*image.shape[:2])
        if target != image.shape[:2]:
            image = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
        channels = [self.table[c % len(self.table)][image[..., c]] for c in range(image.shape[2])]
        return torch.from_numpy(np.stack(channels))

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(image), torch.from_numpy(mask.astype(np.int64))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


def create_eval_transform(
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: tuple[int, int] | int | None = None,
) -> EvalTransform:
    """The evaluation transform: the image resized to ``size`` (``(H, W)``, or the short side
    when an int; None keeps it), normalised (0-255 units); the mask untouched (full size)."""
    return EvalTransform(mean, std, size)
