"""Metrics of groups of classes in an experiment (spec keys ``class_groups`` and
``confusion_groups``)::

    class_groups: {tail: [jacket, bracelet, scarf]}      # every row gets tail_mIoU
    metrics: [mIoU, tail_mIoU]                           # ... and may be compared on it
    confusion_groups: {footwear: [shoes, boots, sandals, socks]}

* ``<group>_mIoU``: the mean of a row's per-class val IoU over the group's classes that have an
  IoU. A class with neither labelled nor predicted val pixels has none (NaN in
  :mod:`clipfuse.evaluation.metrics`, ``null`` in ``per_class``) and is left out, as mIoU
  leaves it out (mmseg's ``nanmean``); a class with no labelled pixel that the model predicts
  somewhere has IoU 0 and counts, as in mIoU. Computed from ``per_class`` whenever the report
  is written, so rows recorded before the key existed get it too.
* ``confusions``: for each class of each confusion group, the % of its labelled val pixels
  (ignored pixels are not in the matrix) predicted as each class of the group (itself
  included) and as any other class (``other``), from the confusion matrix of the run's final
  validation (``metrics.json`` key ``confusion``).

Every name must be a class of every run's dataset (matched as dataset names are: case, spaces,
``_`` and ``-`` alike), checked when the spec is read.
"""

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clipfuse.engine.run_folder import METRICS_FILE
from clipfuse.errors import ClipfuseError
from clipfuse.text.base import normalize_name

Groups = dict[str, tuple[str, ...]]
SUFFIX = "_mIoU"
_GROUP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_groups(value: Any, key: str, where: str, smallest: int = 1) -> Groups:
    """The spec's ``key`` mapping (group name -> list of class names; empty when absent), its
    shape checked; the names are checked against the datasets by :func:`resolve_groups`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ClipfuseError(f"{where}: {key} must be a mapping of group name -> class names")
    groups: Groups = {}
    for name, members in value.items():
        if not isinstance(name, str) or not _GROUP_NAME.match(name):
            raise ClipfuseError(
                f"{where}: {key}: group name {name!r} must be a word ([A-Za-z0-9_])"
            )
        if (
            isinstance(members, str)
            or not isinstance(members, Sequence)
            or len(members) < smallest
            or not all(isinstance(member, str) and member.strip() for member in members)
        ):
            raise ClipfuseError(
                f"{where}: {key}: group {name!r} must list at least {smallest} class name(s), "
                f"got {members!r}"
            )
        keys = [normalize_name(member) for member in members]
        if len(set(keys)) != len(keys):
            raise ClipfuseError(f"{where}: {key}: group {name!r} lists a class twice: {members}")
        groups[name] = tuple(members)
    return groups


def resolve_groups(
    groups: Groups, key: str, classes: Mapping[str, list[str]], where: str
) -> Groups:
    """``groups`` with each name as the datasets spell it; ``classes``: run name -> the class
    names of its dataset (:func:`clipfuse.build.class_names_of`). A name some run's dataset
    does not have is a one-line error."""
    indexes = {
        run: {normalize_name(name): name for name in names} for run, names in classes.items()
    }
    resolved: Groups = {}
    for group, members in groups.items():
        for member in members:
            for run, index in indexes.items():
                if normalize_name(member) not in index:
                    raise ClipfuseError(
                        f"{where}: {key}: group {group!r} names {member!r}, not a class of "
                        f"the dataset of run {run!r} ({len(index)} classes: "
                        f"{', '.join(index.values())})"
                    )
        first = next(iter(indexes.values()), {})  # the first run's spelling
        resolved[group] = tuple(first.get(normalize_name(m), m) for m in members)
    return resolved


def group_metrics(class_groups: Groups) -> tuple[str, ...]:
    """The row keys of the class groups: ``<group>_mIoU``."""
    return tuple(f"{group}{SUFFIX}" for group in class_groups)


def group_miou(per_class: Mapping[str, float | None], members: Sequence[str]) -> float | None:
    """The mean IoU over the ``members`` that have one in ``per_class`` (None: none has)."""
    by_name = {normalize_name(name): iou for name, iou in per_class.items()}
    present = [by_name.get(normalize_name(member)) for member in members]
    present = [float(iou) for iou in present if iou is not None]
    return sum(present) / len(present) if present else None


def confusion_shares(
    confusion: Sequence[Sequence[int]] | None, class_names: Sequence[str], groups: Groups
) -> dict | None:
    """``{group: {class: {"pixels", "predicted": {member: %}, "other": %}}}`` from a confusion
    matrix (rows ground truth, columns prediction, in ``class_names`` order); percentages of
    the class's labelled pixels, None for a class without any; None without a matrix."""
    if confusion is None:
        return None
    index = {normalize_name(name): k for k, name in enumerate(class_names)}
    shares: dict = {}
    for group, members in groups.items():
        ids = [index[normalize_name(member)] for member in members]
        shares[group] = {}
        for member, k in zip(members, ids, strict=True):
            row = confusion[k]
            pixels = int(sum(row))
            rest = pixels - sum(row[j] for j in ids)
            shares[group][member] = {
                "pixels": pixels,
                "predicted": {
                    other: (100 * row[j] / pixels if pixels else None)
                    for other, j in zip(members, ids, strict=True)
                },
                "other": 100 * rest / pixels if pixels else None,
            }
    return shares


def group_fields(
    class_groups: Groups, confusion_groups: Groups, row: dict, metrics: dict | None = None
) -> dict:
    """A row's ``<group>_mIoU`` (from its ``per_class``) and, given its ``metrics.json``
    (``metrics``) and confusion groups, its ``confusions``."""
    fields: dict = {
        f"{group}{SUFFIX}": group_miou(row.get("per_class") or {}, members)
        for group, members in class_groups.items()
    }
    if confusion_groups and metrics is not None:
        names = [entry["name"] for entry in metrics.get("per_class", [])]
        fields["confusions"] = confusion_shares(metrics.get("confusion"), names, confusion_groups)
    return fields


def folder_metrics(folder: Path) -> dict | None:
    """The ``metrics.json`` of a run folder, or None."""
    path = Path(folder) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
