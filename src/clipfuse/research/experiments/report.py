"""The report of an experiment: one row per finished (run, seed), aggregated over seeds.

Written into each report folder (atomically, file by file):

* ``results.json`` and ``results.csv``: one row per (run, seed) with val mIoU / mAcc / aAcc,
  per-class IoU, GMACs, parameters, CPU latency, training wall time and the run's config path
  (and the class-group metrics of :mod:`clipfuse.research.experiments.groups`);
* ``results.md``: mean ± sample standard deviation (n - 1) over seeds per run, the
  comparisons of the spec (:mod:`clipfuse.research.experiments.compare`: differences, 95% interval,
  p-value, verdict, pairing), per-class IoU means, the best run and the commands that
  reproduce the grid and retrain the best run;
* ``best_config.yaml``: the full config of the best single run (highest val mIoU);
* ``results.png``: val mIoU against GMACs, one labelled point per run, error bars = the std
  (:mod:`clipfuse.research.experiments.plot`).

The rows come from the run folders (:func:`load_rows`) or, to re-render a report without
them, from a committed ``results.json`` (:func:`read_rows`).
"""

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from clipfuse.config import current_method
from clipfuse.engine.run_folder import CONFIG_FILE
from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.fileio import atomic_write_bytes, prepare_dir
from clipfuse.research.experiments.compare import compare_all, comparison_markdown, stream_markdown
from clipfuse.research.experiments.groups import folder_metrics, group_fields, group_metrics
from clipfuse.research.experiments.plot import results_plot
from clipfuse.research.experiments.spec import ExperimentSpec, seed_folder
from clipfuse.research.experiments.tables import (
    VOCAB_COLUMNS,
    confusion_markdown,
    format_mean_std,
    group_markdown,
    mean_std,
    per_class_markdown,
    vocab_markdown,
)

RESULT_FILE = "result.json"  # one per (run, seed) folder, written by the runner
BEST_CONFIG_FILE = "best_config.yaml"
# (key, column title, digits) of the per-run table
SUMMARY_COLUMNS = (
    ("mIoU", "mIoU", 2),
    ("mAcc", "mAcc", 2),
    ("aAcc", "aAcc", 2),
    ("gmacs", "GMACs", 2),
    ("params_m", "params (M)", 2),
    ("latency_ms", "latency (ms)", 1),
    ("train_minutes", "train (min)", 1),
)
CSV_COLUMNS = (
    "run",
    "seed",
    "method",
    "step",
    "mIoU",
    "mAcc",
    "aAcc",
    "gmacs",
    "params_m",
    "latency_ms",
    "latency_iqr_ms",
    "latency_threads",
    "train_seconds",
    "resumed",
    "seeding",
    "batch_stream",
    "config",
    *(key for key, _, _ in VOCAB_COLUMNS),
)


def run_started(folder: Path) -> bool:
    """Whether a run was started in ``folder``: its config or a checkpoint is there."""
    return (folder / CONFIG_FILE).is_file() or (folder / "checkpoints" / "last.ckpt").exists()


def run_folder(spec: ExperimentSpec, out: Path, run: str, seed: int) -> Path:
    """The folder holding (run, seed)'s result: its run folder under ``out`` once it has
    started there, else its record beside the report (:meth:`ExperimentSpec.record_dir`) if
    one is kept, else the run folder."""
    folder = Path(out) / seed_folder(run, seed)
    record = spec.record_dir(run, seed)
    if not run_started(folder) and record is not None and (record / RESULT_FILE).is_file():
        return record
    return folder


def load_rows(spec: ExperimentSpec, out: Path) -> list[dict]:
    """The rows of every finished (run, seed) of ``spec`` (:func:`run_folder`), in spec order;
    with ``confusion_groups``, each row's ``confusions`` from its folder's ``metrics.json``."""
    rows = []
    for run in spec.runs:
        for seed in run.seeds:
            folder = run_folder(spec, out, run.name, seed)
            if (folder / RESULT_FILE).is_file():
                row = json.loads((folder / RESULT_FILE).read_text())
                if spec.confusion_groups:
                    metrics = folder_metrics(folder)
                    row.update(group_fields({}, spec.confusion_groups, row, metrics))
                rows.append(row)
    return rows


def with_groups(spec: ExperimentSpec, rows: Sequence[dict]) -> list[dict]:
    """The rows with their ``<group>_mIoU`` of the spec's ``class_groups``, computed from
    ``per_class`` (rows recorded before the groups existed get them too)."""
    return [{**row, **group_fields(spec.class_groups, {}, row)} for row in rows]


def read_rows(spec: ExperimentSpec, path: Path) -> list[dict]:
    """The rows of a report's ``results.json`` written for ``spec``, as they are."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ClipfuseError(f"cannot read the rows of {path}: {one_line(error)}") from error
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(row, dict) and {"run", "seed"} <= set(row) for row in rows
    ):
        raise ClipfuseError(f"{path} is not an experiment's results.json: no list of 'rows'")
    if data.get("experiment") != spec.name:
        raise ClipfuseError(
            f"{path} holds experiment {data.get('experiment')!r}, the spec is {spec.name!r}"
        )
    names = {run.name for run in spec.runs}
    unknown = sorted({row["run"] for row in rows} - names)
    if unknown:
        raise ClipfuseError(f"{path} has rows of run(s) {', '.join(unknown)}, not in the spec")
    return rows


def summarize(rows: Sequence[dict], extra: Sequence[str] = ()) -> list[dict]:
    """Per run (in order of first appearance): ``{"run", "method", "n", "seeds",
    "<metric>": {"mean", "std"}, "per_class": {name: mean IoU}}``; ``extra``: more row keys
    to aggregate (e.g. ``<group>_mIoU``)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["run"], []).append(row)
    summaries = []
    for name, group in groups.items():
        summary: dict = {
            "run": name,
            "method": current_method(group[0].get("method")),  # rows may predate a rename
            "n": len(group),
            "seeds": [row["seed"] for row in group],
        }
        for key in (*(key for key, _, _ in (*SUMMARY_COLUMNS, *VOCAB_COLUMNS)), *extra):
            if key == "train_minutes":
                values = [_minutes(row.get("train_seconds")) for row in group]
            else:
                values = [row.get(key) for row in group]
            mean, std = mean_std(values)
            summary[key] = {"mean": mean, "std": std}
        for field in ("per_class", "decoder_per_class", "vocab_per_class", "calibrated_per_class"):
            classes = list(group[0].get(field, {}))
            summary[field] = {
                name: mean_std([row.get(field, {}).get(name) for row in group])[0]
                for name in classes
            }
        summaries.append(summary)
    return summaries


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def _as_bytes(data: bytes | str) -> bytes:
    return data if isinstance(data, bytes) else data.encode("utf-8")


def results_csv(rows: Sequence[dict], extra: Sequence[str] = ()) -> str:
    """One line per (run, seed), with the ``extra`` row keys (e.g. ``<group>_mIoU``) after
    :data:`CSV_COLUMNS`; per-class IoU in ``IoU.<class>`` columns."""
    classes: list[str] = []
    for row in rows:
        classes += [name for name in row.get("per_class", {}) if name not in classes]
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        fieldnames=[*CSV_COLUMNS, *extra, *(f"IoU.{name}" for name in classes)],
        lineterminator="\n",
    )
    writer.writeheader()
    for row in rows:
        line = {key: row.get(key) for key in (*CSV_COLUMNS, *extra)}
        line.update({f"IoU.{name}": iou for name, iou in row.get("per_class", {}).items()})
        writer.writerow(line)
    return buffer.getvalue()


def _planned(spec: ExperimentSpec) -> list[tuple[str, int]]:
    return [(run.name, seed) for run in spec.runs for seed in run.seeds]


def results_markdown(spec: ExperimentSpec, out: Path, rows: Sequence[dict]) -> str:
    """The Markdown report: per-run mean ± std table, comparisons, class groups, per-class
    IoU, confusions within groups, best run, command."""
    rows = with_groups(spec, rows)
    summaries = summarize(rows)
    height, width = spec.eval_size
    planned = _planned(spec)
    done = {(row["run"], row["seed"]) for row in rows}
    missing = [f"{run} seed {seed}" for run, seed in planned if (run, seed) not in done]
    spec_arg = str(spec.path) if spec.path else "SPEC.yaml"
    # with a report_dir the records continue the grid in any folder: no machine's path
    out_arg = "" if spec.report_dir or Path(out) == spec.default_out() else f" --out {out}"
    lines = [
        f"# Experiment `{spec.name}`",
        "",
        "Reproduce (finished runs are kept, an interrupted one is resumed): "
        f"`clipfuse experiment {spec_arg}{out_arg}`",
        "",
    ]
    if spec.base:
        lines.append(f"* base config: `{spec.base}`")
    if spec.overrides:
        lines.append(f"* shared overrides: `{' '.join(spec.overrides)}`")
    for run in spec.runs:
        if run.evaluates:
            own = run.overrides[len(spec.run(run.evaluates).overrides) :]
            how = ["its trained weights, not their average"] if run.trained_weights else []
            how += [f"`{' '.join(own)}`"] if own else []
            lines.append(
                f"* `{run.name}` trains nothing: it evaluates `{run.evaluates}`'s checkpoints "
                f"with {' and '.join(how) or 'the same settings'}"
            )
    lines.append(
        f"* finished: {len(done)} of {len(planned)} (run, seed) pairs"
        + (f"; missing: {', '.join(missing)}" if missing else "")
    )
    lines.append("")
    header = ["run", "method", "n", *(title for _, title, _ in SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        cells = [summary["run"], str(summary["method"]), str(summary["n"])]
        for key, _, digits in SUMMARY_COLUMNS:
            cells.append(format_mean_std(summary[key]["mean"], summary[key]["std"], digits))
        lines.append("| " + " | ".join(cells) + " |")
    machines = sorted(
        {f"{row['cpu']}, {row['latency_threads']} threads" for row in rows if row.get("cpu")}
    )
    lines += [
        "",
        "Val metrics in %, mean ± sample std (n - 1) over the n seeds (a single seed has no "
        f"spread). GMACs and parameters of one {height}x{width} image without the text encoder; "
        f"latency: median of {spec.latency['repeats']} forward passes at batch 1 after "
        f"{spec.latency['warmup']} warm-up, {height}x{width}, CPU"
        + (f" ({'; '.join(machines)})" if machines else "")
        + "; train: wall time of training and validation.",
    ]
    if summaries:
        lines += ["", "## Comparisons", ""]
        lines += comparison_markdown(compare_all(rows, spec.comparison_pairs(), spec.metrics))
        lines += [
            "",
            "Batch streams (the first 12 hex digits of each run's hash of its training "
            "batches; equal in a column: the same batches):",
            "",
        ]
        lines += stream_markdown(rows)
    lines += group_markdown(spec, rows)
    lines += per_class_markdown(summaries, "per_class", "Per-class IoU (mean over seeds)")
    lines += confusion_markdown(spec, rows)
    if spec.vocab_eval is not None:
        lines += vocab_markdown(spec, summaries, rows)
    lines += _best_run_lines(spec, out, rows)
    lines += ["", "![val mIoU against GMACs](results.png)", ""]
    return "\n".join(lines)


def _best_run_lines(spec: ExperimentSpec, out: Path, rows: Sequence[dict]) -> list[str]:
    """The report's line on the best single run and how to retrain it."""
    best = best_row(rows)
    if best is None:
        return []
    best_config = Path(spec.report_dir or out) / BEST_CONFIG_FILE
    note = ""
    if best.get("evaluates"):
        weights = " with `clipfuse eval --trained-weights`" if best.get("trained_weights") else ""
        note = f" (it scores `{best['evaluates']}`'s training{weights})"
    return [
        "",
        f"Best single run: `{best['run']}` seed {best['seed']}, mIoU {best['mIoU']:.2f}; "
        f"its full config is `{best_config}`, retrain it with "
        f"`clipfuse train --config {best_config} --out runs/{best['run']}`{note}.",
    ]


def best_row(rows: Sequence[dict]) -> dict | None:
    """The finished (run, seed) with the highest val mIoU, or None."""
    finished = [row for row in rows if row.get("mIoU") is not None]
    return max(finished, key=lambda row: row["mIoU"], default=None)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def write_report(
    spec: ExperimentSpec,
    out: Path,
    folders: Sequence[Path] = (),
    rows: Sequence[dict] | None = None,
) -> list[Path]:
    """(Re)write results.{json,csv,md,png} and best_config.yaml from every finished run under
    ``out`` (or from ``rows``, e.g. :func:`read_rows`, then written into ``folders`` only)
    into ``out`` and each of ``folders``; returns the paths written."""
    out = Path(out)
    targets = [out, *folders] if rows is None else list(folders)
    rows = with_groups(spec, load_rows(spec, out) if rows is None else rows)
    groups = group_metrics(spec.class_groups)
    report = {
        "experiment": spec.name,
        "rows": rows,
        "summary": summarize(rows, groups),
        "comparisons": [
            item.as_dict() for item in compare_all(rows, spec.comparison_pairs(), spec.metrics)
        ],
    }
    files = {
        "results.json": json.dumps(_json_safe(report), indent=2),
        "results.csv": results_csv(rows, groups),
        "results.md": results_markdown(spec, out, rows),
    }
    try:
        files["results.png"] = results_plot(spec, summarize(rows))
    except ClipfuseError as error:
        announce(f"results.png not written: {one_line(error)}")
    best = best_row(rows)
    if best is not None:
        best_config = run_folder(spec, out, best["run"], best["seed"]) / CONFIG_FILE
        if best_config.is_file():
            files[BEST_CONFIG_FILE] = best_config.read_text()
        else:
            announce(f"{BEST_CONFIG_FILE} not rewritten: {best_config} not found")
    written = []
    for folder in targets:
        folder = prepare_dir(folder, "report folder")
        for name, data in files.items():
            written.append(atomic_write_bytes(folder / name, _as_bytes(data)))
    return written
