"""The open-vocabulary evaluation of an experiment's runs (spec key ``vocab_eval``).

After a run is trained, ``clipfuse eval-vocab`` (:func:`clipfuse.inference.eval_vocab.evaluate_vocab`)
scores it with the spec's options; its report is kept beside the run (``vocab_eval.json``) and
its headline numbers join the run's result row (:data:`VOCAB_METRICS`), so the comparisons of
the spec (key ``metrics``) can be made on them with the same paired statistics as val mIoU::

    vocab_eval: {unseen: [blazer, blouse]}     # any evaluate_vocab option below
    metrics: [mIoU, unseen_mIoU, calibrated_hmean]
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clipfuse.errors import ClipfuseError

VOCAB_FILE = "vocab_eval.json"
VOCAB_OPTIONS = {
    "dataset",
    "root",
    "split",
    "names",
    "map",
    "unseen",
    "gammas",
    "seen_drop",
    "limit",
}
# What only the open-vocabulary path reads (not passed for a model without text).
OPEN_VOCAB_OPTIONS = {"names", "unseen", "gammas", "seen_drop"}
# (row key, column title): the decoder's prediction through the label mapping (every method),
# the open-vocabulary path at gamma = 0, calibrated stacking (gamma chosen from seen labels
# only) and, for reference, the oracle gamma's harmonic mean.
VOCAB_METRICS = (
    ("decoder_mIoU", "decoder mIoU"),
    ("vocab_mIoU", "all mIoU"),
    ("seen_mIoU", "seen"),
    ("unseen_mIoU", "unseen"),
    ("hmean", "hmean"),
    ("calibrated_gamma", "cal. gamma"),
    ("calibrated_seen_mIoU", "cal. seen"),
    ("calibrated_unseen_mIoU", "cal. unseen"),
    ("calibrated_hmean", "cal. hmean"),
    ("oracle_hmean", "oracle hmean"),
)
ROW_METRICS = ("mIoU", "mAcc", "aAcc")


def parse_vocab_eval(value: Any, where: str) -> dict | None:
    """The spec's ``vocab_eval`` mapping (None when absent), its keys checked."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ClipfuseError(f"{where}: vocab_eval must be a mapping of eval-vocab options")
    unknown = sorted(set(value) - VOCAB_OPTIONS)
    if unknown:
        raise ClipfuseError(
            f"{where}: vocab_eval: unknown key(s) {', '.join(unknown)}; expected "
            f"{', '.join(sorted(VOCAB_OPTIONS))}"
        )
    return dict(value)


def parse_metrics(
    value: Any, vocab_eval: dict | None, where: str, groups: Sequence[str] = ()
) -> tuple[str, ...]:
    """The spec's ``metrics`` (default ``[mIoU]``): row keys the comparisons are made on;
    ``groups``: the row keys of the spec's class groups (``<group>_mIoU``)."""
    if value is None:
        return ("mIoU",)
    vocab = [key for key, _ in VOCAB_METRICS if vocab_eval is not None]
    known = [*ROW_METRICS, *vocab, *groups]
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ClipfuseError(f"{where}: metrics must be a non-empty list, e.g. [mIoU]")
    for metric in value:
        if metric not in known:
            hint = "" if vocab_eval is not None else " (the open-vocabulary ones need vocab_eval)"
            if metric.endswith("_mIoU") and metric not in (key for key, _ in VOCAB_METRICS):
                hint += " (<group>_mIoU needs the group in class_groups)"
            raise ClipfuseError(
                f"{where}: metrics: unknown metric {metric!r}; expected one of "
                f"{', '.join(known)}{hint}"
            )
    if len(set(value)) != len(value):
        raise ClipfuseError(f"{where}: metrics lists a metric twice: {list(value)}")
    return tuple(value)


def evaluate_run(folder: Path, options: dict, method: str) -> dict:
    """Score the run in ``folder`` (its ``last.ckpt``, a model of ``method``) with
    ``options``; the report is written to ``folder/vocab_eval.json``. Returns the row fields
    (:func:`vocab_row`). A method without text has no open-vocabulary path: the options that
    only it reads (:data:`OPEN_VOCAB_OPTIONS`) do not apply to it."""
    from clipfuse.inference.eval_vocab import evaluate_vocab
    from clipfuse.models.factory import method_uses_text

    skipped = set() if method_uses_text(method) else OPEN_VOCAB_OPTIONS
    kwargs = {key: value for key, value in options.items() if key not in {"map", *skipped}}
    if "map" in options:
        kwargs["mapping"] = options["map"]
    report = evaluate_vocab(
        folder / "checkpoints" / "last.ckpt",
        json_path=folder / VOCAB_FILE,
        progress=False,
        **kwargs,
    )
    return vocab_row(report)


def vocab_row(report: dict) -> dict:
    """The result-row fields of an eval-vocab report: :data:`VOCAB_METRICS`, the path, the
    unseen classes and per-class IoU of the decoder, at gamma = 0 and at the calibrated gamma.
    A model without an open-vocabulary path (``plain``) has its decoder's fields and None for
    the others."""
    decoder, vocab = report["decoder"], report["open_vocab"]
    row = {
        "decoder_mIoU": decoder["mIoU"] if decoder else None,
        "decoder_per_class": {e["name"]: e["IoU"] for e in decoder["per_class"]} if decoder else {},
    }
    if vocab is None:
        return {**row, "vocab_path": None, **{key: None for key, _ in VOCAB_METRICS[1:]}}
    calibrated, oracle = vocab["calibrated"], vocab["oracle"] or {}
    per_class = {entry["name"]: entry["IoU"] for entry in vocab["per_class"]}
    return {
        **row,
        "vocab_path": vocab["path"],
        "vocab_unseen": vocab["unseen"],
        "vocab_mIoU": vocab["mIoU"],
        "seen_mIoU": vocab["seen_mIoU"],
        "unseen_mIoU": vocab["unseen_mIoU"],
        "hmean": vocab["hmean"],
        "calibrated_gamma": calibrated["gamma"],
        "calibrated_seen_mIoU": calibrated["seen_mIoU"],
        "calibrated_unseen_mIoU": calibrated["unseen_mIoU"],
        "calibrated_hmean": calibrated["hmean"],
        "oracle_hmean": oracle.get("hmean"),
        "vocab_per_class": per_class,
        "calibrated_per_class": {e["name"]: e["IoU"] for e in calibrated["per_class"]},
    }
