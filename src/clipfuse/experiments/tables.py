"""Tables of an experiment's report: mean ± std cells, per-class tables and the
open-vocabulary section (:mod:`clipfuse.experiments.report` assembles them)."""

import statistics
from collections.abc import Sequence

from clipfuse.experiments.spec import ExperimentSpec
from clipfuse.experiments.vocab import VOCAB_METRICS

WIDE_TABLE_CLASSES = 12  # a per-class table with more classes has one line per class
VOCAB_COLUMNS = tuple((key, title, 2) for key, title in VOCAB_METRICS)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the values that are not None; the std is
    None for fewer than two values, the mean None for none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    mean = statistics.fmean(present)
    return mean, (statistics.stdev(present) if len(present) > 1 else None)


def format_mean_std(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``41.20 ± 0.53``; the mean alone for one value or no spread (e.g. GMACs); ``–`` for none."""
    if mean is None:
        return "–"
    if std is None or std == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def per_class_markdown(summaries: Sequence[dict], field: str, title: str) -> list[str]:
    """A per-class table of ``field`` (class -> mean IoU), one line per run; none if empty."""
    if not any(summary.get(field) for summary in summaries):
        return []
    classes: list[str] = []
    for summary in summaries:
        classes += [name for name in summary.get(field, {}) if name not in classes]
    lines = ["", f"## {title}", ""]
    if len(classes) <= WIDE_TABLE_CLASSES:
        lines += ["| run | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
        for summary in summaries:
            cells = [format_mean_std(summary[field].get(name), None, 1) for name in classes]
            lines.append(f"| {summary['run']} | " + " | ".join(cells) + " |")
        return lines
    runs = [summary["run"] for summary in summaries]  # many classes: one line per class
    lines += ["| class | " + " | ".join(runs) + " |", "|" + "---|" * (len(runs) + 1)]
    for name in classes:
        cells = [format_mean_std(summary[field].get(name), None, 1) for summary in summaries]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def vocab_markdown(
    spec: ExperimentSpec, summaries: Sequence[dict], rows: Sequence[dict]
) -> list[str]:
    """The open-vocabulary section: the table of :data:`VOCAB_METRICS` and per-class IoU."""
    options = " ".join(f"{key}={value}" for key, value in (spec.vocab_eval or {}).items())
    unseen = next((row["vocab_unseen"] for row in rows if row.get("vocab_unseen")), [])
    paths = sorted({f"{row['run']}: {row['vocab_path']}" for row in rows if row.get("vocab_path")})
    header = ["run", "n", *(title for _, title, _ in VOCAB_COLUMNS)]
    lines = ["", "## Open vocabulary (`clipfuse eval-vocab`)", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        cells = [summary["run"], str(summary["n"])]
        for key, _, digits in VOCAB_COLUMNS:
            cells.append(format_mean_std(summary[key]["mean"], summary[key]["std"], digits))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "decoder mIoU: the model's own prediction, its classes mapped onto the split's (only "
        "mapped classes scored); the rest: every class of the evaluated split queried at once "
        f"through the open-vocabulary path (options: `{options or 'none'}`; – for a model "
        "without one); "
        f"unseen: {', '.join(unseen) or 'none'}. mIoU in %, mean ± std over seeds, at gamma = 0 "
        "and with calibrated stacking (cal.: gamma subtracted from the seen classes' "
        "log-probabilities, chosen from the seen labels only); oracle: the best harmonic mean "
        "on the gamma grid (reads the unseen labels; not a result). Paths: "
        + ("; ".join(paths) or "–")
        + ". Each run's full report with the seen-vs-unseen curve: `<run>/seed<k>/vocab_eval.json`.",
    ]
    lines += per_class_markdown(
        summaries, "decoder_per_class", "Decoder IoU per mapped class (eval-vocab)"
    )
    lines += per_class_markdown(
        summaries, "vocab_per_class", "Open-vocabulary IoU per class (gamma = 0)"
    )
    lines += per_class_markdown(
        summaries, "calibrated_per_class", "Open-vocabulary IoU per class (calibrated gamma)"
    )
    return lines
