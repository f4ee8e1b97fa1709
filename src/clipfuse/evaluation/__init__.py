"""Confusion-matrix metrics and whole / sliding-window / flip / multi-scale inference."""

from clipfuse.evaluation.metrics import (
    SegmentationMetrics,
    format_table,
    metrics_json,
    results_to_json,
)
from clipfuse.evaluation.tta import InferenceConfig, infer_probabilities

__all__ = [
    "InferenceConfig",
    "SegmentationMetrics",
    "format_table",
    "infer_probabilities",
    "metrics_json",
    "results_to_json",
]
