"""Using a trained model: :func:`load`, :class:`ClipfuseModel` (predict, save_pretrained),
prediction results and overlays. The web demo lives in :mod:`clipfuse.inference.serve`."""

from clipfuse.config import FORMAT_VERSION
from clipfuse.inference.labels import LabelChoice, parse_labels, resolve_labels
from clipfuse.inference.predict import (
    Prediction,
    as_rgb,
    expand_inputs,
    read_image,
)
from clipfuse.inference.pretrained import ClipfuseModel, load
from clipfuse.inference.visualize import colorize, overlay_with_legend

__all__ = [
    "FORMAT_VERSION",
    "ClipfuseModel",
    "LabelChoice",
    "Prediction",
    "as_rgb",
    "colorize",
    "expand_inputs",
    "load",
    "overlay_with_legend",
    "parse_labels",
    "read_image",
    "resolve_labels",
]
