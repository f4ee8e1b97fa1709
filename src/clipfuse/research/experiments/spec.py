"""Experiment specs: a grid of named runs (config variants) x seeds, read from one YAML file.

The format is documented in ``docs/research/experiments.md``::

    name: camvid_claims
    base: configs/convformer_mobilenetv2_camvid_192x256_140.yaml
    overrides: [train.max_steps=400]          # applied to every run
    seeds: [0, 1, 2]                          # default seeds of every run
    eval_size: [360, 480]                     # H W of the GMACs and latency measurements
    runs:
      fpn: {overrides: [model.method=plain], replace: {model.head_kwargs: {}}}
      convformer: {}
      convformer_dot: {overrides: [model.head_kwargs.bridge=dot], seeds: [0]}
    comparisons: [convformer:fpn, convformer_dot:convformer]   # default: every run vs the first
    vocab_eval: {dataset: labelmefacade, map: [Tree=vegetation]}  # optional: eval-vocab each run
    metrics: [mIoU, unseen_mIoU]              # compared on these row keys (default: mIoU)
    class_groups: {tail: [Pole, SignSymbol]}  # rows get tail_mIoU (experiments.groups)
    confusion_groups: {people: [Pedestrian, Bicyclist]}   # % predicted as each sibling

A run with ``evaluate: RUN`` trains nothing: it scores the checkpoints of an earlier run of the
spec, seed by seed, with other evaluation settings (its ``overrides`` may change only
``data.val_size``, ``data.eval_split`` and ``eval.*``) or, with ``trained_weights: true``, the
trained weights of a ``train.ema_decay`` run instead of their average. Its rows pair with the
evaluated run's (the same training)::

      convformer_full: {evaluate: convformer, overrides: ["data.val_size=[360, 480]"]}

A run's config is built in this order: its base file (with ``_base_``), then ``replace``
(shared, then the run's: each dotted key set to the given value outright, so a mapping such as
``model.head_kwargs`` is replaced instead of merged key by key), then ``overrides`` (shared, then
the run's, merged as on the ``clipfuse train`` command line), then ``seed``. ``{seed}`` in an
override stands for the seed, e.g. to fine-tune from another grid's run of the same seed::

      finetune: {overrides: ["train.init_from=runs/experiments/a/clip/seed{seed}/checkpoints/last.ckpt"]}
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipfuse.config import changed_keys, load_config, parse_yaml
from clipfuse.errors import ClipfuseError
from clipfuse.research.experiments.compare import default_pairs
from clipfuse.research.experiments.groups import Groups, group_metrics, parse_groups, resolve_groups
from clipfuse.research.experiments.vocab import (
    ROW_METRICS,
    VOCAB_METRICS,
    parse_metrics,
    parse_vocab_eval,
)

SPEC_KEYS = {
    "name",
    "base",
    "overrides",
    "replace",
    "seeds",
    "eval_size",
    "latency",
    "out",
    "report_dir",
    "runs",
    "comparisons",
    "vocab_eval",
    "metrics",
    "class_groups",
    "confusion_groups",
}
RUN_KEYS = {"base", "overrides", "replace", "seeds", "evaluate", "trained_weights"}
EVALUATION_RUN_KEYS = {"evaluate", "overrides", "seeds", "trained_weights"}
# What an evaluation run (``evaluate: RUN``) may set differently from the run it evaluates.
EVALUATION_KEYS = ("data.val_size", "data.eval_split", "eval.")
LATENCY_KEYS = {"warmup", "repeats"}
DEFAULT_EVAL_SIZE = (360, 480)
DEFAULT_LATENCY = {"warmup": 3, "repeats": 10}
RESERVED = {*ROW_METRICS, *(key for key, _ in VOCAB_METRICS)}  # row keys a group may not take
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RunSpec:
    """One named config variant of an experiment, with everything shared already folded in."""

    name: str
    base: Path
    overrides: tuple[str, ...]
    replace: dict[str, Any]
    seeds: tuple[int, ...]
    evaluates: str | None = None  # an evaluation run: the run whose checkpoints it scores
    trained_weights: bool = False  # ... its trained weights, not their average (EMA)

    def config(self, seed: int) -> dict:
        """The full, validated config of this run at ``seed`` (``{seed}`` in an override
        replaced by it)."""
        overrides = [item.replace("{seed}", str(seed)) for item in self.overrides]
        try:
            return load_config(self.base, overrides, replace={**self.replace, "seed": seed})
        except ClipfuseError as error:
            raise ClipfuseError(f"experiment run {self.name!r}: {error}") from error


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed spec file: runs in file order, measurement settings and output folders."""

    name: str
    runs: tuple[RunSpec, ...]
    eval_size: tuple[int, int] = DEFAULT_EVAL_SIZE
    latency: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LATENCY))
    out: Path | None = None
    report_dir: Path | None = None
    path: Path | None = None
    base: Path | None = None
    overrides: tuple[str, ...] = ()
    comparisons: tuple[tuple[str, str], ...] = ()  # (run, baseline) pairs; () = the default
    vocab_eval: dict | None = None  # eval-vocab options scored after each run (experiments.vocab)
    metrics: tuple[str, ...] = ("mIoU",)  # the row keys the comparisons are made on
    class_groups: Groups = field(default_factory=dict)  # group -> classes: <group>_mIoU
    confusion_groups: Groups = field(default_factory=dict)  # group -> classes: confusions

    def comparison_pairs(self) -> list[tuple[str, str]]:
        """The declared ``comparisons``, else every run against the first."""
        return list(self.comparisons) or default_pairs([run.name for run in self.runs])

    def run(self, name: str) -> RunSpec:
        """The run called ``name``."""
        for run in self.runs:
            if run.name == name:
                return run
        known = ", ".join(run.name for run in self.runs)
        raise ClipfuseError(
            f"experiment {self.name!r} has no run {name!r}: expected one of {known}"
        )

    def records_dir(self) -> Path | None:
        """``<report_dir>/runs``, where the finished runs' records are kept beside the report,
        or None without ``report_dir``."""
        return None if self.report_dir is None else self.report_dir / "runs"

    def record_dir(self, run: str, seed: int) -> Path | None:
        """Where a finished (run, seed)'s small files are kept beside the report (committed:
        a new checkout continues the grid from them), or None without ``report_dir``."""
        records = self.records_dir()
        return None if records is None else records / seed_folder(run, seed)

    def default_out(self) -> Path:
        """``out`` from the spec, else ``runs/experiments/<name>``."""
        return self.out if self.out is not None else Path("runs") / "experiments" / self.name


def seed_folder(run: str, seed: int) -> Path:
    """``<run>/seed<seed>``: where (run, seed) lives, relative to the grid folder ``out`` and
    to ``<report_dir>/runs`` alike."""
    return Path(run) / f"seed{seed}"


def _where(spec_path: Path | None, value: str | Path) -> Path:
    """A path from the spec: as given (absolute, or relative to the working directory) when it
    exists, else relative to the spec file's folder."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or spec_path is None:
        return path
    beside = spec_path.parent / path
    return beside if beside.exists() else path


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ClipfuseError(f"{what} must be a list of section.key=value strings, got {value!r}")
    items = tuple(str(item) for item in value)
    for item in items:
        if item.partition("=")[0].strip() == "seed":
            raise ClipfuseError(f"{what}: set seeds with 'seeds: [...]', not {item!r}")
    return items


def _seeds(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        raise ClipfuseError(f"{what} must be a non-empty list of integers, got {value!r}")
    if len(set(value)) != len(value):
        raise ClipfuseError(f"{what} lists a seed twice: {list(value)}")
    return tuple(value)


def _mapping(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ClipfuseError(f"{what} must be a mapping, got {value!r}")
    return dict(value)


def _check_keys(data: Mapping, allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ClipfuseError(
            f"{what}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
        )


def _comparisons(value: Any, run_names: Sequence[str], what: str) -> tuple[tuple[str, str], ...]:
    """``[RUN:BASELINE, ...]`` as (run, baseline) pairs of two different runs of the spec."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ClipfuseError(f"{what} must be a list of RUN:BASELINE strings, got {value!r}")
    pairs = []
    for item in value:
        run, colon, baseline = str(item).partition(":")
        run, baseline = run.strip(), baseline.strip()
        if not colon or not run or not baseline or run == baseline:
            raise ClipfuseError(f"{what}: {item!r} must be RUN:BASELINE, two different run names")
        unknown = [name for name in (run, baseline) if name not in run_names]
        if unknown:
            raise ClipfuseError(
                f"{what}: {item!r} names no run {unknown[0]!r}; runs: {', '.join(run_names)}"
            )
        if (run, baseline) in pairs:
            raise ClipfuseError(f"{what} lists {item!r} twice")
        pairs.append((run, baseline))
    return tuple(pairs)


def _evaluation_run(name: str, data: dict, earlier: Sequence[RunSpec], where: str) -> RunSpec:
    """The run ``name`` that scores an earlier training run's checkpoints (``evaluate``) with
    other evaluation settings or its trained weights; its config is checked to differ from the
    evaluated run's in evaluation settings only."""
    _check_keys(data, EVALUATION_RUN_KEYS, f"{where} (an evaluation run)")
    source = next((run for run in earlier if run.name == data["evaluate"]), None)
    if source is None or source.evaluates:
        names = ", ".join(run.name for run in earlier if not run.evaluates) or "none"
        raise ClipfuseError(
            f"{where}: evaluate: {data['evaluate']!r} must name a training run listed before it "
            f"(here: {names})"
        )
    seeds = _seeds(data["seeds"], f"{where}: seeds") if "seeds" in data else source.seeds
    if not set(seeds) <= set(source.seeds):
        raise ClipfuseError(f"{where}: seeds {list(seeds)} are not all {source.name}'s seeds")
    trained = data.get("trained_weights", False)
    if not isinstance(trained, bool):
        raise ClipfuseError(f"{where}: trained_weights must be true or false, got {trained!r}")
    run = RunSpec(
        name=name,
        base=source.base,
        overrides=source.overrides + _strings(data.get("overrides"), f"{where}: overrides"),
        replace=source.replace,
        seeds=seeds,
        evaluates=source.name,
        trained_weights=trained,
    )
    config, trained_config = run.config(seeds[0]), source.config(seeds[0])
    changed = [
        key for key in changed_keys(trained_config, config) if not key.startswith(EVALUATION_KEYS)
    ]
    if changed:
        raise ClipfuseError(
            f"{where}: an evaluation run may change only {', '.join(EVALUATION_KEYS)}* "
            f"settings, not {', '.join(changed)}"
        )
    if trained and trained_config["train"]["ema_decay"] is None:
        raise ClipfuseError(
            f"{where}: trained_weights: {source.name} has no weight average (train.ema_decay), "
            "so its checkpoints hold only the trained weights"
        )
    return run


def parse_spec(data: Mapping, path: Path | None = None) -> ExperimentSpec:
    """An :class:`ExperimentSpec` from the loaded YAML mapping; every run's config is built
    once for its first seed, so typos fail here rather than hours into a grid."""
    where = f"experiment spec {path}" if path else "experiment spec"
    if not isinstance(data, Mapping):
        raise ClipfuseError(f"{where} must be a mapping")
    _check_keys(data, SPEC_KEYS, where)
    name = data.get("name") or (path.stem if path else None)
    if not name or not _NAME.match(str(name)):
        raise ClipfuseError(f"{where}: 'name' must be a folder-safe name, got {name!r}")
    if "base" not in data:
        raise ClipfuseError(f"{where}: 'base' (the config every run starts from) is missing")
    base = _where(path, data["base"])
    overrides = _strings(data.get("overrides"), f"{where}: overrides")
    replace = _mapping(data.get("replace"), f"{where}: replace")
    seeds = _seeds(data.get("seeds", [0]), f"{where}: seeds")
    eval_size = data.get("eval_size", list(DEFAULT_EVAL_SIZE))
    if (
        not isinstance(eval_size, Sequence)
        or len(eval_size) != 2
        or not all(isinstance(s, int) and s >= 32 for s in eval_size)
    ):
        raise ClipfuseError(f"{where}: eval_size must be [H, W], each >= 32, got {eval_size!r}")
    latency = {**DEFAULT_LATENCY, **_mapping(data.get("latency"), f"{where}: latency")}
    _check_keys(latency, LATENCY_KEYS, f"{where}: latency")
    if latency["warmup"] < 0 or latency["repeats"] < 1:
        raise ClipfuseError(f"{where}: latency needs warmup >= 0 and repeats >= 1")
    runs_data = data.get("runs")
    if not isinstance(runs_data, Mapping) or not runs_data:
        raise ClipfuseError(f"{where}: 'runs' must be a non-empty mapping of name -> run")
    runs = []
    for run_name, run_data in runs_data.items():
        run_where = f"{where}: run {run_name!r}"
        if not _NAME.match(str(run_name)):
            raise ClipfuseError(f"{run_where}: the name must be folder-safe ([A-Za-z0-9_.-])")
        run_data = _mapping(run_data, run_where)
        _check_keys(run_data, RUN_KEYS, run_where)
        if "evaluate" in run_data:
            run = _evaluation_run(str(run_name), run_data, runs, run_where)
        else:
            if "trained_weights" in run_data:
                raise ClipfuseError(f"{run_where}: trained_weights needs 'evaluate: RUN'")
            run = RunSpec(
                name=str(run_name),
                base=_where(path, run_data["base"]) if "base" in run_data else base,
                overrides=overrides
                + _strings(run_data.get("overrides"), f"{run_where}: overrides"),
                replace={**replace, **_mapping(run_data.get("replace"), f"{run_where}: replace")},
                seeds=_seeds(run_data["seeds"], f"{run_where}: seeds")
                if "seeds" in run_data
                else seeds,
            )
            run.config(run.seeds[0])  # fail early on a bad base, key or value
        runs.append(run)
    vocab_eval = parse_vocab_eval(data.get("vocab_eval"), where)
    if vocab_eval is not None and any(run.evaluates for run in runs):
        raise ClipfuseError(f"{where}: vocab_eval does not combine with evaluation runs")
    class_groups, confusion_groups = _groups(data, runs, where)
    return ExperimentSpec(
        name=str(name),
        runs=tuple(runs),
        eval_size=(int(eval_size[0]), int(eval_size[1])),
        latency={key: int(value) for key, value in latency.items()},
        out=Path(data["out"]) if data.get("out") else None,
        report_dir=Path(data["report_dir"]) if data.get("report_dir") else None,
        path=path,
        base=base,
        overrides=overrides,
        comparisons=_comparisons(
            data.get("comparisons"), [run.name for run in runs], f"{where}: comparisons"
        ),
        vocab_eval=vocab_eval,
        metrics=parse_metrics(data.get("metrics"), vocab_eval, where, group_metrics(class_groups)),
        class_groups=class_groups,
        confusion_groups=confusion_groups,
    )


def _groups(data: Mapping, runs: Sequence[RunSpec], where: str) -> tuple[Groups, Groups]:
    """The spec's ``class_groups`` and ``confusion_groups``, each name checked against the
    class names of every run's dataset (built from its config)."""
    class_groups = parse_groups(data.get("class_groups"), "class_groups", where)
    confusion_groups = parse_groups(
        data.get("confusion_groups"), "confusion_groups", where, smallest=2
    )
    taken = [group for group in class_groups if f"{group}_mIoU" in RESERVED]
    if taken:
        raise ClipfuseError(f"{where}: class_groups: {taken[0]!r} would shadow {taken[0]}_mIoU")
    if not class_groups and not confusion_groups:
        return class_groups, confusion_groups
    from clipfuse.build import class_names_of

    classes = {run.name: class_names_of(run.config(run.seeds[0])) for run in runs}
    return (
        resolve_groups(class_groups, "class_groups", classes, where),
        resolve_groups(confusion_groups, "confusion_groups", classes, where),
    )


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and check an experiment spec file."""
    path = Path(path)
    if not path.is_file():
        raise ClipfuseError(f"experiment spec {path} not found")
    data = parse_yaml(path.read_text(), f"experiment spec {path}")
    return parse_spec(data or {}, path)
