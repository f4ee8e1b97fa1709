"""Experiment grids: named config variants x seeds, trained one at a time, resumable, with
a report of val metrics, cost and latency (``clipfuse experiment``,
docs/research/experiments.md)."""

from clipfuse.research.experiments.report import format_mean_std, mean_std, summarize, write_report
from clipfuse.research.experiments.spec import ExperimentSpec, RunSpec, load_spec, parse_spec

__all__ = [
    "ExperimentSpec",
    "RunSpec",
    "format_mean_std",
    "load_spec",
    "mean_std",
    "parse_spec",
    "summarize",
    "write_report",
]
