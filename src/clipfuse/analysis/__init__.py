"""Cost analysis: GMACs and parameters per part of a model."""

from clipfuse.analysis.cost import config_cost, evaluation_size, format_cost, segmentor_cost
from clipfuse.analysis.flops import count_macs, count_params

__all__ = [
    "config_cost",
    "count_macs",
    "count_params",
    "evaluation_size",
    "format_cost",
    "segmentor_cost",
]
