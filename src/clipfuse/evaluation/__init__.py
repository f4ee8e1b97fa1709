"""Confusion-matrix metrics and whole / sliding-window / flip / multi-scale inference.

The metrics (:mod:`clipfuse.evaluation.metrics`) are imported when first used: they import
torchmetrics, which imports transformers (about 110 MB and a second), which prediction and
``clipfuse serve`` do not need (the ``train`` extra installs it)."""

import importlib

from clipfuse.evaluation.tta import InferenceConfig, infer_probabilities
from clipfuse.extras import require

_METRICS = ("SegmentationMetrics", "format_table", "metrics_json", "results_to_json")

__all__ = ["InferenceConfig", "infer_probabilities", *_METRICS]


def __getattr__(name: str):
    if name in _METRICS:
        require("torchmetrics", "the segmentation metrics (clipfuse eval, eval-vocab)")
        return getattr(importlib.import_module("clipfuse.evaluation.metrics"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
