"""Confusion-matrix metrics and whole / sliding-window / flip / multi-scale inference."""

from clipfuse.evaluation.inference import MODES, InferenceConfig, infer_logits
from clipfuse.evaluation.metrics import SegmentationMetrics, format_table, results_to_json

__all__ = [
    "MODES",
    "InferenceConfig",
    "SegmentationMetrics",
    "format_table",
    "infer_logits",
    "results_to_json",
]
