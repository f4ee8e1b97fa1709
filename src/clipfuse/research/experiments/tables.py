"""Tables of an experiment's report: mean ± std cells, per-class tables, the
open-vocabulary section and the class-group sections (:mod:`clipfuse.research.experiments.report`
assembles them)."""

import statistics
from collections.abc import Sequence

from clipfuse.research.experiments.groups import group_metrics
from clipfuse.research.experiments.spec import ExperimentSpec
from clipfuse.research.experiments.vocab import VOCAB_METRICS

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


def group_markdown(spec: ExperimentSpec, rows: Sequence[dict]) -> list[str]:
    """The class-group section: ``<group>_mIoU`` per run, mean ± std over seeds."""
    if not spec.class_groups:
        return []
    keys = group_metrics(spec.class_groups)
    header = ["run", "n", *(f"{group} mIoU" for group in spec.class_groups)]
    lines = ["", "## Class groups (mIoU over a group's classes)", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, group_rows in _by_run(rows).items():
        cells = [format_mean_std(*mean_std([row.get(key) for row in group_rows])) for key in keys]
        lines.append(f"| {run} | {len(group_rows)} | " + " | ".join(cells) + " |")
    members = "; ".join(
        f"{group} ({len(names)}): {', '.join(names)}" for group, names in spec.class_groups.items()
    )
    lines += [
        "",
        f"Groups: {members}. A row's group mIoU is the mean of its val IoU over the group's "
        "classes that have one: a class with neither labelled nor predicted val pixels has no "
        "IoU and is left out, as mIoU leaves it out; a class with no labelled pixel that the "
        "model predicts somewhere has IoU 0 and counts. Mean ± std over seeds.",
    ]
    return lines


def confusion_markdown(spec: ExperimentSpec, rows: Sequence[dict]) -> list[str]:
    """Per confusion group, per run (mean over seeds) and true class: the % of its labelled
    val pixels predicted as each class of the group and as anything else."""
    if not spec.confusion_groups:
        return []
    lines = ["", "## Confusions within groups (% of a class's labelled val pixels)"]
    runs = _by_run(rows)
    for group, members in spec.confusion_groups.items():
        header = ["run", "class", "pixels", *members, "other"]
        lines += ["", f"### {group}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for run, run_rows in runs.items():
            shares = [(row.get("confusions") or {}).get(group) for row in run_rows]
            shares = [share for share in shares if share]
            for member in members:
                entries = [share[member] for share in shares if member in share]
                cells = [
                    _share_cell([e["predicted"].get(other) for e in entries], other == member)
                    for other in members
                ]
                pixels = str(entries[0]["pixels"]) if entries else "–"
                other = _share_cell([e["other"] for e in entries], False)
                lines.append(f"| {run} | {member} | {pixels} | {' | '.join(cells)} | {other} |")
    lines += [
        "",
        "From the confusion matrix of each run's final validation (`metrics.json` key "
        "`confusion`): of the val pixels labelled with the class (pixels; ignored pixels are not "
        "counted), the % predicted as each class of the group (bold: itself, i.e. correct) and "
        "as any class outside it (other); mean over the run's seeds, – without a matrix or "
        "without labelled pixels.",
    ]
    return lines


def _share_cell(values: Sequence[float | None], own: bool) -> str:
    mean, _ = mean_std(values)
    cell = format_mean_std(mean, None, 1)
    return f"**{cell}**" if own and mean is not None else cell


def _by_run(rows: Sequence[dict]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for row in rows:
        runs.setdefault(row["run"], []).append(row)
    return runs
