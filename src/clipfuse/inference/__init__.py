from clipfuse.inference.predict import Predictor, expand_inputs, read_image
from clipfuse.inference.visualize import colorize, overlay_with_legend

__all__ = [
    "Predictor",
    "colorize",
    "default_palette",
    "expand_inputs",
    "overlay_with_legend",
    "read_image",
]
