"""Run an experiment grid one (run, seed) at a time, resumable: ``clipfuse experiment``.

Each (run, seed) trains into ``<out>/<run>/seed<seed>/`` (a normal ``clipfuse train`` folder).
Before anything starts, every folder gets a status:

* ``done``: its ``metrics.json`` is at ``train.max_steps`` and its ``result.json`` is written:
  skipped;
* ``to measure``: trained to ``max_steps`` but not yet measured: only measured;
* ``to resume``: a run was started there (``config.yaml`` or ``checkpoints/last.ckpt``) but not
  finished: continued from its last checkpoint with ``train(None, folder, resume=True)``;
* ``to run``: nothing there yet: trained from scratch;
* ``to evaluate``: an evaluation run (``evaluate: RUN`` in the spec) not scored yet: the
  evaluated run's ``last.ckpt`` is scored with the run's evaluation settings
  (:func:`clipfuse.engine.evaluate`); its row takes the cost, training time and batch stream of
  the evaluated run's row (the same training).

A folder whose saved config differs from the spec's (other than how it runs: devices, logging,
workers) is an error, not silently mixed into the results. After each run, ``result.json``
records its val metrics, GMACs, parameters and CPU latency (:mod:`clipfuse.research.experiments.measure`),
its training wall time (accumulated over resumptions through the checkpoint), its seeding
version, batch-stream hash and resumptions (:mod:`clipfuse.engine.batch_stream`: what a strict
pairing checks) and its config path; then the report (:mod:`clipfuse.research.experiments.report`) is
rewritten from every finished run. :func:`rewrite_report` rewrites it without training (with
``--report-only``), also from a committed ``results.json`` when run folders are gone (``--from``).

With a ``report_dir``, each finished run's small files (config, metrics, result row, timing,
batch-stream hash, open-vocabulary report: no weights) are also kept in
``<report_dir>/runs/<run>/seed<seed>/``. Committed with the report, they are what a new
checkout (whose ``runs/`` is empty) continues the grid from: a (run, seed) whose run folder was
never started and whose record is complete and has the spec's config is ``done``.
"""

import gc
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from clipfuse.config import resolve_path
from clipfuse.engine import train
from clipfuse.engine.batch_stream import STREAM_FILE
from clipfuse.engine.lock import RunLock
from clipfuse.engine.progress import WallClock
from clipfuse.engine.run_folder import CONFIG_FILE, FORMAT_FILE, METRICS_FILE, changes_from_saved
from clipfuse.errors import ClipfuseError
from clipfuse.fileio import atomic_write_bytes, atomic_write_text
from clipfuse.research.experiments.evaluation_run import score_checkpoint
from clipfuse.research.experiments.groups import group_fields
from clipfuse.research.experiments.measure import measure_model
from clipfuse.research.experiments.report import (
    RESULT_FILE,
    read_rows,
    run_folder,
    run_started,
    write_report,
)
from clipfuse.research.experiments.spec import ExperimentSpec, load_spec, seed_folder
from clipfuse.research.experiments.tables import format_mean_std
from clipfuse.research.experiments.vocab import VOCAB_FILE, evaluate_run

TIMING_FILE = "timing.json"
LOCK_FILE = ".experiment.lock"
# What a finished run's record beside the report keeps (ExperimentSpec.record_dir).
RECORD_FILES = (
    CONFIG_FILE,
    FORMAT_FILE,
    METRICS_FILE,
    RESULT_FILE,
    TIMING_FILE,
    STREAM_FILE,
    VOCAB_FILE,
)
# Keys that say how a run executes, not what it computes: they may differ on a later invocation.
_EXECUTION_KEYS = {
    "train.accelerator",
    "train.devices",
    "train.num_nodes",
    "train.strategy",
    "train.progress_bar",
    "train.log_every",
    "train.threads",
    "data.num_workers",
}


class Status(StrEnum):
    """What the runner will do with a (run, seed) folder."""

    DONE = "done"
    MEASURE = "to measure"
    RESUME = "to resume"
    RUN = "to run"
    EVALUATE = "to evaluate"


@dataclass
class Job:
    """One (run, seed) of the grid, its folder, full config and status."""

    run: str
    seed: int
    folder: Path
    config: dict
    status: Status
    step: int | None = None  # the step of its last validation, if any


def _last_step(folder: Path) -> int | None:
    metrics = folder / METRICS_FILE
    if not metrics.is_file():
        return None
    try:
        return int(json.loads(metrics.read_text())["step"])
    except (ValueError, KeyError, TypeError):
        return None


def job_status(folder: Path, config: dict, needs: Sequence[str] = ()) -> tuple[Status, int | None]:
    """The status of ``folder`` for a run of ``config`` and the step of its last validation;
    a finished run whose result row lacks a key of ``needs`` is to be measured again."""
    if (folder / CONFIG_FILE).is_file():
        _, changed = changes_from_saved(folder, config)
        differences = [
            f"{key} ({there!r} there, {planned!r} in the spec)"
            for key, (there, planned) in changed.items()
            if key not in _EXECUTION_KEYS
        ]
        if differences:
            raise ClipfuseError(
                f"{folder} holds a run with another config ({'; '.join(differences[:4])}): "
                "use another --out, or delete the folder to rerun it"
            )
    step = _last_step(folder)
    if step is not None and step >= config["train"]["max_steps"]:
        done = (folder / RESULT_FILE).is_file() and set(needs) <= set(
            json.loads((folder / RESULT_FILE).read_text())
        )
        return (Status.DONE if done else Status.MEASURE), step
    return (Status.RESUME if run_started(folder) else Status.RUN), step


def plan(
    spec: ExperimentSpec,
    out: Path,
    only: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Job]:
    """Every (run, seed) of ``spec`` with its status; ``only`` / ``seeds``: just these runs /
    seeds (a seed no selected run has is an error)."""
    selected = [spec.run(name) for name in only] if only else list(spec.runs)
    if seeds is not None:
        known = {seed for run in selected for seed in run.seeds}
        unknown = sorted(set(seeds) - known)
        if unknown:
            raise ClipfuseError(
                f"seed(s) {unknown} are not in the selected runs of {spec.name} "
                f"(seeds there: {sorted(known)})"
            )
    jobs = []
    for run in selected:
        for seed in run.seeds:
            if seeds is not None and seed not in seeds:
                continue
            config = run.config(seed)
            folder = run_folder(spec, out, run.name, seed)
            status, step = job_status(folder, config, _needs(spec))
            if status is not Status.DONE and folder == spec.record_dir(run.name, seed):
                folder = Path(out) / seed_folder(run.name, seed)  # an incomplete record: rerun
                status, step = job_status(folder, config, _needs(spec))
            if run.evaluates and status is not Status.DONE:
                status = Status.EVALUATE
            jobs.append(Job(run.name, seed, folder, config, status, step))
    return jobs


def keep_record(job: Job, spec: ExperimentSpec) -> None:
    """Copy the finished job's small files to its record beside the report, if one is kept."""
    record = spec.record_dir(job.run, job.seed)
    if record is None or record == job.folder:
        return
    record.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (job.folder / name).is_file():
            atomic_write_bytes(record / name, (job.folder / name).read_bytes())


def _check_init_from(todo: Sequence[Job]) -> None:
    """Stop before the first run if a run to start has a ``train.init_from`` that neither
    exists nor lies in the folder of a run this call trains (a spec may train and fine-tune)."""
    trained = [job.folder.resolve() for job in todo if job.status in (Status.RUN, Status.RESUME)]
    for job in todo:
        source = job.config["train"]["init_from"]
        if job.status is not Status.RUN or source is None:
            continue  # a resumed run continues from its own checkpoint
        path = Path(resolve_path(source)).resolve()
        if not path.exists() and not any(path.is_relative_to(f) for f in trained):
            raise ClipfuseError(
                f"run {job.run} seed {job.seed}: train.init_from {path} does not exist "
                "(train the run it starts from first, or select it with --only)"
            )


def _needs(spec: ExperimentSpec) -> tuple[str, ...]:
    """The keys a finished run's result row must hold under ``spec``."""
    return ("vocab_path",) if spec.vocab_eval is not None else ()


def format_plan(spec: ExperimentSpec, out: Path, jobs: Sequence[Job]) -> str:
    """The plan as a table, one line per (run, seed), and a count per status."""
    width = max(12, *(len(job.run) for job in jobs)) + 2
    lines = [
        f"experiment {spec.name}: {len(jobs)} (run, seed) pairs in {out}",
        f"{'run':<{width}}{'seed':>5}  {'status':<12}{'last val step':>14}",
    ]
    for job in jobs:
        step = "-" if job.step is None else str(job.step)
        lines.append(f"{job.run:<{width}}{job.seed:>5}  {job.status.value:<12}{step:>14}")
    counts = [f"{sum(j.status is s for j in jobs)} {s.value}" for s in Status]
    lines.append(", ".join(counts))
    recorded = sum(job.folder == spec.record_dir(job.run, job.seed) for job in jobs)
    if recorded:
        lines.append(f"{recorded} done from their records in {spec.report_dir / 'runs'}")
    return "\n".join(lines)


def _train(job: Job) -> None:
    """Train (or continue) the job's run; record its training wall time."""
    clock = WallClock()
    if job.status is Status.RESUME:
        train(None, job.folder, resume=True, callbacks=[clock])
    else:
        train(job.config, job.folder, callbacks=[clock])
    timing = {"train_seconds": clock.elapsed(), "resumed": job.status is Status.RESUME}
    atomic_write_text(job.folder / TIMING_FILE, json.dumps(timing, indent=2))


def _record(job: Job, spec: ExperimentSpec, trained_row: dict | None = None) -> dict:
    """Measure the job's model and write its ``result.json`` row; an evaluation run's takes
    what does not depend on evaluation from the evaluated run's row, ``trained_row``."""
    metrics = json.loads((job.folder / METRICS_FILE).read_text())
    max_steps = job.config["train"]["max_steps"]
    if metrics.get("step") != max_steps:
        raise ClipfuseError(
            f"{job.folder}/{METRICS_FILE} is at step {metrics.get('step')}, not {max_steps}"
        )
    if trained_row is not None:
        row = {
            **trained_row,
            **_metric_fields(job, metrics, spec),
            "config": _config_path(job),
        }
        run = spec.run(job.run)
        row.update(evaluates=run.evaluates, trained_weights=run.trained_weights)
        atomic_write_text(job.folder / RESULT_FILE, json.dumps(row, indent=2))
        return row
    timing_path = job.folder / TIMING_FILE
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    stream_path = job.folder / STREAM_FILE
    stream = json.loads(stream_path.read_text()) if stream_path.is_file() else {}
    cost = measure_model(job.config, spec.eval_size, **spec.latency)
    vocab = (
        evaluate_run(job.folder, spec.vocab_eval, job.config["model"]["method"])
        if spec.vocab_eval is not None
        else {}
    )
    row = {
        **_metric_fields(job, metrics, spec),
        **cost,
        "eval_size": list(spec.eval_size),
        "train_seconds": timing.get("train_seconds"),
        "resumed": timing.get("resumed"),
        "seeding": stream.get("seeding", 1),  # runs without the record predate seeding 2
        "batch_stream": stream.get("stream"),
        "resumes": stream.get("resumes"),  # absent from records older than the key
        "config": _config_path(job),
        **vocab,
    }
    atomic_write_text(job.folder / RESULT_FILE, json.dumps(row, indent=2))
    return row


def _config_path(job: Job) -> str:
    """The run's ``config.yaml`` relative to the grid folder (and to ``<report_dir>/runs``,
    where its record is): a committed row carries no machine's path."""
    return (seed_folder(job.run, job.seed) / CONFIG_FILE).as_posix()


def _metric_fields(job: Job, metrics: dict, spec: ExperimentSpec) -> dict:
    """The row fields of the job's val metrics (``metrics.json``), with the spec's class-group
    metrics and confusions (:mod:`clipfuse.research.experiments.groups`)."""
    fields = {
        "run": job.run,
        "seed": job.seed,
        "method": job.config["model"]["method"],
        "step": metrics["step"],
        "mIoU": metrics["mIoU"],
        "mAcc": metrics["mAcc"],
        "aAcc": metrics["aAcc"],
        "per_class": {entry["name"]: entry["IoU"] for entry in metrics["per_class"]},
    }
    return {**fields, **group_fields(spec.class_groups, spec.confusion_groups, fields, metrics)}


def run_experiment(
    spec: ExperimentSpec | str | Path,
    out: str | Path | None = None,
    only: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = print,
) -> list[Job]:
    """Run (or continue) the grid of ``spec`` into ``out`` (default: the spec's ``out``, else
    ``runs/experiments/<name>``), one (run, seed) at a time; ``only`` / ``seeds``: just these
    runs / seeds (e.g. seed 0 of every run first, the other seeds in a later sitting).

    Returns the planned jobs with the status they had before this call. ``dry_run`` prints
    the plan and does nothing else. The report is rewritten after each run and at the end,
    also when a run fails (then the error is raised again).
    """
    if not isinstance(spec, ExperimentSpec):
        spec = load_spec(spec)
    out = Path(out) if out is not None else spec.default_out()
    say = progress or (lambda message: None)
    jobs = plan(spec, out, only, seeds)
    say(format_plan(spec, out, jobs))
    todo = [job for job in jobs if job.status is not Status.DONE]
    _check_init_from(todo)
    if dry_run:
        return jobs
    folders = [spec.report_dir] if spec.report_dir else []
    with RunLock(out, LOCK_FILE, ("experiment folder", "another clipfuse experiment")):
        try:
            for job in jobs:
                if job.status is Status.DONE:
                    keep_record(job, spec)  # grids finished before records were kept
            for index, job in enumerate(todo, start=1):
                label = f"[{index}/{len(todo)}] {job.run} seed {job.seed}"
                trained_row = None
                if job.status is Status.EVALUATE:
                    say(f"{label}: evaluating {spec.run(job.run).evaluates} seed {job.seed}")
                    trained_row = score_checkpoint(
                        spec, out, job.run, job.seed, job.folder, job.config
                    )
                elif job.status in (Status.RUN, Status.RESUME):
                    verb = "resuming" if job.status is Status.RESUME else "training"
                    say(f"{label}: {verb} in {job.folder}")
                    _train(job)
                if trained_row is None:
                    vocab = " and open-vocabulary scores" if spec.vocab_eval is not None else ""
                    say(f"{label}: measuring GMACs and latency at {spec.eval_size}{vocab}")
                row = _record(job, spec, trained_row)
                keep_record(job, spec)
                scores = "".join(
                    f", {key} {format_mean_std(row.get(key), None)}" for key in spec.metrics[1:]
                )
                say(f"{label}: mIoU {row['mIoU']:.2f}{scores}, {row['gmacs']:.2f} GMACs")
                write_report(spec, out, folders)
                gc.collect()
        finally:
            written = write_report(spec, out, folders)
            say(f"report: {', '.join(str(path) for path in written if path.suffix == '.md')}")
    return jobs


def rewrite_report(
    spec: ExperimentSpec | str | Path,
    out: str | Path | None = None,
    rows_from: str | Path | None = None,
    progress: Callable[[str], None] | None = print,
) -> list[Path]:
    """Rewrite the report of ``spec``, training and measuring nothing: from the finished runs
    under ``out`` (default: the spec's grid folder) into it and the spec's ``report_dir``; or,
    with ``rows_from`` (a ``results.json``), from its rows as they are into ``out`` if given,
    else the spec's ``report_dir``. Returns the paths written."""
    if not isinstance(spec, ExperimentSpec):
        spec = load_spec(spec)
    say = progress or (lambda message: None)
    if rows_from is None:
        out = Path(out) if out is not None else spec.default_out()
        records = spec.records_dir()
        if not out.is_dir() and not (records is not None and records.is_dir()):
            raise ClipfuseError(
                f"no grid folder {out} and no run records beside the report to report on "
                "(--from RESULTS_JSON re-renders a report from its rows)"
            )
        out.mkdir(parents=True, exist_ok=True)  # a new checkout reports from the records
        folders = [spec.report_dir] if spec.report_dir else []
        with RunLock(out, LOCK_FILE, ("experiment folder", "another clipfuse experiment")):
            written = write_report(spec, out, folders)
    else:
        target = Path(out) if out is not None else spec.report_dir
        if target is None:
            raise ClipfuseError(
                f"--from {rows_from}: the spec has no report_dir; name the folder with --out"
            )
        rows = read_rows(spec, Path(rows_from))
        written = write_report(spec, spec.default_out(), [target], rows=rows)
    say(f"report: {', '.join(str(path) for path in written if path.suffix == '.md')}")
    return written
