"""Colour overlays with a legend for predicted label maps."""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """H x W label map -> H x W x 3 colours (255 = ignore is black)."""
    colours = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = labels < len(palette)
    colours[valid] = palette[labels[valid]]
    return colours


ROWS_AT_ONCE = 256
"""Rows of a label map :func:`label_counts` and :func:`overlay_with_legend` process at once:
their temporary arrays (8-byte counts, float blends) stay a few MB for any image width."""


def label_counts(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """How many pixels of the H x W ``labels`` hold each label ``0 .. num_labels - 1`` (other
    values, such as 255, are not counted)."""
    counts = np.zeros(num_labels, dtype=np.int64)
    for start in range(0, labels.shape[0], ROWS_AT_ONCE):
        block = labels[start : start + ROWS_AT_ONCE].ravel()
        counts += np.bincount(block, minlength=num_labels)[:num_labels]
    return counts


def blend(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """The colourised ``labels`` blended over the H x W x 3 uint8 ``image`` (``alpha``: the
    colours' weight), computed :data:`ROWS_AT_ONCE` rows at a time into the uint8 result, so a
    large image costs the result's size, not float copies of the whole image."""
    blended = np.empty_like(image)
    for start in range(0, image.shape[0], ROWS_AT_ONCE):
        rows = slice(start, start + ROWS_AT_ONCE)
        colours = colorize(labels[rows], palette)
        blended[rows] = (image[rows] * (1 - alpha) + colours * alpha).astype(np.uint8)
    return blended


def overlay_with_legend(
    image: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    alpha: float = 0.5,
) -> Image.Image:
    """Blend the colourised labels over the image (:func:`blend`) and add a legend of the
    classes present on the right."""
    counts = label_counts(labels, len(class_names))
    present = [k for k in range(len(class_names)) if counts[k]]
    font = ImageFont.load_default()
    row = 16
    legend_width = 12 + max((int(font.getlength(class_names[k])) for k in present), default=0) + 24
    image_height, image_width = labels.shape
    height = max(image_height, row * len(present) + 8)
    canvas = Image.new("RGB", (image_width + legend_width, height), (255, 255, 255))
    for start in range(0, image_height, ROWS_AT_ONCE):  # a band at a time: no full-size copy
        rows = slice(start, start + ROWS_AT_ONCE)
        canvas.paste(Image.fromarray(blend(image[rows], labels[rows], palette, alpha)), (0, start))
    draw = ImageDraw.Draw(canvas)
    x = image_width + 6
    for i, k in enumerate(present):
        y = 4 + i * row
        draw.rectangle(
            [x, y, x + 12, y + 12], fill=tuple(int(c) for c in palette[k]), outline=(0, 0, 0)
        )
        draw.text((x + 18, y), class_names[k], fill=(0, 0, 0), font=font)
    return canvas
