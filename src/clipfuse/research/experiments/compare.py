"""Comparisons between the runs of an experiment: the difference in val mIoU, its 95%
confidence interval and p-value, and a verdict that follows the interval.

For ``run`` against ``baseline``:

* **paired** (Student t over the seeds both have finished, ``scipy.stats.ttest_rel``): the
  per-seed differences, their mean, the t interval of the mean and the two-sided p-value;
* **Welch** (``scipy.stats.ttest_ind(equal_var=False)``) when the two runs share no seed: the
  difference of the means, its interval and p-value for unequal variances.

A side with one value (one shared seed, or one seed of an unpaired run), or differences with no
spread, gives no interval and says why. The verdict is ``ahead`` / ``behind`` only when the
interval excludes 0, else ``not shown``.

Seed by seed, a pair is **strict** when both rows trained on the same batches: both recorded
with ``seeding`` >= 2 (the training data stream depends on the seed alone; rows without the key
are seeding 1) and the same non-null ``batch_stream`` (a hash of every training batch), and each
row's record proves its training was the uninterrupted one (:func:`resume_problem`; two
evaluations of one training need not: they score the same weights). A pair that is not strict
is still paired by seed number, and says why (``seeding 1``, ``unknown stream``, ``different
batches``, ``resumed without random state``, ``resumes unrecorded``).
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy import stats

CONFIDENCE = 0.95
METRIC = "mIoU"


@dataclass(frozen=True)
class Comparison:
    """``run`` minus ``baseline`` in ``metric``; ``interval`` is ``(low, high)`` or None (then
    ``note`` says why); ``test`` is ``paired``, ``welch`` or None (a side has no rows)."""

    run: str
    baseline: str
    metric: str
    test: str | None
    seeds: tuple[int, ...]  # paired: the shared seeds, in order; Welch: none
    differences: tuple[float, ...]  # paired: per seed
    n_run: int
    n_baseline: int
    mean: float | None
    interval: tuple[float, float] | None
    p_value: float | None
    verdict: str
    strict: bool
    pairing: str
    note: str | None

    def as_dict(self) -> dict:
        """A plain dict, as results.json holds it."""
        return asdict(self)


def resume_problem(row: dict) -> str | None:
    """None when the row's record proves its training was the uninterrupted one, else why not.

    Proof is ``resumes`` (:mod:`clipfuse.engine.batch_stream`: every resumption, each of which
    restored the random state), or, in a record older than that key, ``resumed`` false (the
    runner trained it in one go): ``resumed`` true there is a resumption from a checkpoint
    without random state, and a record with neither key does not say."""
    resumes = row.get("resumes")
    if resumes is not None:
        exact = all(resume["random_state"] for resume in resumes)
        return None if exact else "resumed without random state"
    resumed = row.get("resumed")
    if resumed is None:
        return "resumes unrecorded"
    return "resumed without random state" if resumed else None


def seed_pairing(row: dict, other: dict) -> str | None:
    """None when the two rows of one seed trained on the same batches, each as its
    uninterrupted run (or are two evaluations of one training: the same weights whatever its
    resumptions did), else why not: ``seeding 1``, ``unknown stream``, ``different batches``
    or a :func:`resume_problem` of either."""
    if min(row.get("seeding", 1), other.get("seeding", 1)) < 2:
        return "seeding 1"
    stream, other_stream = row.get("batch_stream"), other.get("batch_stream")
    if stream is None or other_stream is None:
        return "unknown stream"
    if stream != other_stream:
        return "different batches"
    if _training(row) == _training(other):
        return None
    return resume_problem(row) or resume_problem(other)


def _training(row: dict) -> str:
    """The run whose training a row scores: an evaluation run's (``evaluates``), else its own."""
    return row.get("evaluates") or row["run"]


def _pairing_text(reasons: dict[int, str | None]) -> str:
    """``strict``, or ``not strict: <reason>`` (with the seeds when not every seed shares it)."""
    failing = {seed: reason for seed, reason in reasons.items() if reason is not None}
    if not failing:
        return "strict"
    by_reason: dict[str, list[int]] = {}
    for seed, reason in failing.items():
        by_reason.setdefault(reason, []).append(seed)
    if len(by_reason) == 1 and len(failing) == len(reasons):
        return f"not strict: {next(iter(by_reason))}"
    parts = [
        f"{reason} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
        for reason, seeds in by_reason.items()
    ]
    return "not strict: " + ", ".join(parts)


def verdict(interval: tuple[float, float] | None) -> str:
    """``ahead`` / ``behind`` when the interval excludes 0, else ``not shown``."""
    if interval is not None and interval[0] > 0:
        return "ahead"
    if interval is not None and interval[1] < 0:
        return "behind"
    return "not shown"


def _statistics(
    test: str, values: list[float], others: list[float]
) -> tuple[tuple[float, float] | None, float | None, str | None]:
    """(interval, p-value, note): no interval, with the reason, for n = 1 or no spread."""
    if test == "paired":
        if len(values) < 2:
            return None, None, "one shared seed: no interval"
        no_spread = len({a - b for a, b in zip(values, others, strict=True)}) == 1
    else:
        if min(len(values), len(others)) < 2:
            return None, None, "n = 1 on one side: no interval"
        no_spread = len(set(values)) == 1 and len(set(others)) == 1
    if no_spread:
        return None, None, "no spread in the values: no interval"
    if test == "paired":
        result = stats.ttest_rel(values, others)
    else:
        result = stats.ttest_ind(values, others, equal_var=False)
    low, high = result.confidence_interval(CONFIDENCE)
    return (float(low), float(high)), float(result.pvalue), None


def _paired(run: str, baseline: str, metric: str, ours: dict, theirs: dict) -> Comparison:
    shared = sorted(set(ours) & set(theirs))
    values = [ours[seed][metric] for seed in shared]
    others = [theirs[seed][metric] for seed in shared]
    differences = tuple(a - b for a, b in zip(values, others, strict=True))
    reasons = {seed: seed_pairing(ours[seed], theirs[seed]) for seed in shared}
    interval, p_value, note = _statistics("paired", values, others)
    return Comparison(
        run=run,
        baseline=baseline,
        metric=metric,
        test="paired",
        seeds=tuple(shared),
        differences=differences,
        n_run=len(shared),
        n_baseline=len(shared),
        mean=math.fsum(differences) / len(differences),
        interval=interval,
        p_value=p_value,
        verdict=verdict(interval),
        strict=all(reason is None for reason in reasons.values()),
        pairing=_pairing_text(reasons),
        note=note,
    )


def _welch(run: str, baseline: str, metric: str, ours: dict, theirs: dict) -> Comparison:
    values = [row[metric] for row in ours.values()]
    others = [row[metric] for row in theirs.values()]
    interval, p_value, note = _statistics("welch", values, others)
    return Comparison(
        run=run,
        baseline=baseline,
        metric=metric,
        test="welch",
        seeds=(),
        differences=(),
        n_run=len(values),
        n_baseline=len(others),
        mean=math.fsum(values) / len(values) - math.fsum(others) / len(others),
        interval=interval,
        p_value=p_value,
        verdict=verdict(interval),
        strict=False,
        pairing="unpaired: no shared seed",
        note=note,
    )


def compare(rows: Sequence[dict], run: str, baseline: str, metric: str = METRIC) -> Comparison:
    """``run`` against ``baseline`` over the rows (one per finished (run, seed)): paired over
    the seeds both have, else Welch."""
    ours, theirs = (
        {row["seed"]: row for row in rows if row["run"] == name and row.get(metric) is not None}
        for name in (run, baseline)
    )
    if ours and theirs:
        test = _paired if set(ours) & set(theirs) else _welch
        return test(run, baseline, metric, ours, theirs)
    return Comparison(
        run=run,
        baseline=baseline,
        metric=metric,
        test=None,
        seeds=(),
        differences=(),
        n_run=len(ours),
        n_baseline=len(theirs),
        mean=None,
        interval=None,
        p_value=None,
        verdict="not shown",
        strict=False,
        pairing="–",
        note=f"no finished seed of {run if not ours else baseline}",
    )


def default_pairs(run_names: Sequence[str]) -> list[tuple[str, str]]:
    """Every run against the first."""
    return [(name, run_names[0]) for name in run_names[1:]]


def compare_all(
    rows: Sequence[dict], pairs: Sequence[tuple[str, str]], metrics: Sequence[str] = (METRIC,)
) -> list[Comparison]:
    """One :class:`Comparison` per metric and ``(run, baseline)`` pair, in order."""
    return [compare(rows, run, baseline, metric) for metric in metrics for run, baseline in pairs]


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _p_value(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def comparison_markdown(comparisons: Sequence[Comparison]) -> list[str]:
    """The comparison table and its legend, as Markdown lines."""
    lines = [
        "| run − baseline | metric | test | n | per seed | mean | 95% CI | p | verdict | pairing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for item in comparisons:
        if item.test == "paired":
            seeds = ("seeds " if len(item.seeds) > 1 else "seed ") + "/".join(map(str, item.seeds))
            per_seed = " / ".join(map(_signed, item.differences)) + f" ({seeds})"
            n = str(len(item.seeds))
        else:
            per_seed = "–"
            n = f"{item.n_run} vs {item.n_baseline}"
        test = {"paired": "paired t", "welch": "Welch t", None: "–"}[item.test]
        interval = (
            f"[{item.interval[0]:+.2f}, {item.interval[1]:+.2f}]"
            if item.interval
            else f"– ({item.note})"
        )
        lines.append(
            f"| `{item.run}` − `{item.baseline}` | {item.metric} | {test} | {n} | {per_seed} | "
            f"{_signed(item.mean)} | {interval} | {_p_value(item.p_value)} | {item.verdict} "
            f"| {item.pairing} |"
        )
    lines += [
        "",
        "Difference in the metric (points; mIoU: val mIoU of the trained classes). Paired t: "
        "the per-seed differences of the seeds both runs finished, their mean and the Student t 95% confidence interval of the mean "
        "(n - 1 degrees of freedom); Welch t: the runs share no seed, so the difference of the "
        "means, with Welch's interval (unequal variances). p: two-sided, against no difference. "
        "Verdict: ahead / behind only when the interval excludes 0, else not shown. Pairing: "
        "strict when both runs of every seed trained on the same batches (seeding 2 and the same "
        "recorded batch stream), each as it would have uninterrupted (never resumed, or resumed "
        "with its random state restored; two evaluations of one training share its weights); "
        "otherwise paired by seed number only, and why: seeding 1 (rows from before the seed "
        "alone fixed the data stream: a different model init shifts it), unknown stream (no batch hash recorded, e.g. resumed from an old "
        "checkpoint), different batches, resumed without random state (resumed from a "
        "checkpoint written before clipfuse saved it: dropout drew afresh), or resumes "
        "unrecorded (the row does not say whether it was resumed).",
    ]
    return lines


def stream_markdown(rows: Sequence[dict]) -> list[str]:
    """Markdown lines: the batch-stream hash of every (run, seed), one column per seed, so a
    reader sees which runs of a seed trained on the same batches."""
    seeds = sorted({row["seed"] for row in rows})
    runs = list(dict.fromkeys(row["run"] for row in rows))
    cells = {(row["run"], row["seed"]): _stream_cell(row) for row in rows}
    lines = ["| run | " + " | ".join(f"seed {seed}" for seed in seeds) + " |"]
    lines.append("|" + "---|" * (len(seeds) + 1))
    for run in runs:
        lines.append(
            f"| {run} | " + " | ".join(cells.get((run, seed), "–") for seed in seeds) + " |"
        )
    return lines


def _stream_cell(row: dict) -> str:
    if row.get("seeding", 1) < 2:
        return "seeding 1"
    stream = row.get("batch_stream")
    return "unknown" if stream is None else f"`{stream[:12]}`"
