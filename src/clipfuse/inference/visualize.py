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


def overlay_with_legend(
    image: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    alpha: float = 0.5,
) -> Image.Image:
    """Blend the colourised labels over the image and add a legend of the classes present."""
    blended = (image * (1 - alpha) + colorize(labels, palette) * alpha).astype(np.uint8)
    present = [int(k) for k in np.unique(labels) if k < len(class_names)]
    font = ImageFont.load_default()
    row = 16
    legend_width = 12 + max((int(font.getlength(class_names[k])) for k in present), default=0) + 24
    height = max(blended.shape[0], row * len(present) + 8)
    canvas = Image.new("RGB", (blended.shape[1] + legend_width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = blended.shape[1] + 6
    for i, k in enumerate(present):
        y = 4 + i * row
        draw.rectangle(
            [x, y, x + 12, y + 12], fill=tuple(int(c) for c in palette[k]), outline=(0, 0, 0)
        )
        draw.text((x + 18, y), class_names[k], fill=(0, 0, 0), font=font)
    return canvas
