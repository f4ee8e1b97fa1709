"""Dataset-level relabelling: classes merged into a parent, ignored, or held out as unseen.

A folder dataset's ``classes.txt`` names the raw mask values; three options of the dataset
(``data.dataset_kwargs``) turn them into the classes a model is trained and scored on:

* ``merge: {child: parent}``: the child's pixels become the parent's; the child is dropped;
* ``ignore: [name, ...]``: the pixels become 255 (not trained, not scored); the name is dropped;
* ``unseen: [name, ...]``: the same as ``ignore`` for the dataset, but named apart: these are
  the held-out names of generalized zero-shot training. The model never sees them (its class
  list, and so its text embeddings, are the remaining names); ``clipfuse eval-vocab`` builds
  the dataset without ``unseen`` and scores every name.

The remaining classes keep their order; train id ``k`` is the ``k``-th of them. Names match
after :func:`~clipfuse.text.base.normalize_name` (case and ``_`` / ``-`` / spaces ignored).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipfuse.data.base import IGNORE_INDEX
from clipfuse.errors import ClipfuseError
from clipfuse.text.base import normalize_name


@dataclass(frozen=True)
class Relabeling:
    """The classes after relabelling and the 256-entry table from raw values to train ids.

    Raw values past the raw class list map to ``len(classes)`` (an invalid id), so the
    dataset's label check still reports them with their raw value.
    """

    classes: tuple[str, ...]
    table: np.ndarray
    unseen: tuple[str, ...] = ()

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        return self.table[mask]


def _lookup(names: Sequence[str], classes: Sequence[str], key: str, source: str) -> list[int]:
    """The raw index of each of ``names``; an error naming ``key`` for an unknown one."""
    index = {normalize_name(name): k for k, name in enumerate(classes)}
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ClipfuseError(f"data.dataset_kwargs.{key}: expected a list of class names")
    unknown = [name for name in names if normalize_name(str(name)) not in index]
    if unknown:
        raise ClipfuseError(
            f"data.dataset_kwargs.{key} names {', '.join(map(repr, unknown))}, not classes of "
            f"{source}: expected some of {', '.join(classes)}"
        )
    return [index[normalize_name(str(name))] for name in names]


def relabel(
    classes: Sequence[str],
    merge: Mapping[str, str] | None = None,
    ignore: Sequence[str] | None = None,
    unseen: Sequence[str] | None = None,
    source: str = "the dataset",
) -> Relabeling:
    """The :class:`Relabeling` of raw ``classes`` under ``merge`` / ``ignore`` / ``unseen``."""
    if merge is not None and not isinstance(merge, Mapping):
        raise ClipfuseError("data.dataset_kwargs.merge: expected a mapping {child: parent}")
    merge = dict(merge or {})
    children = _lookup(list(merge), classes, "merge", source)
    parents = _lookup(list(merge.values()), classes, "merge", source)
    ignored = _lookup(ignore or [], classes, "ignore", source)
    held_out = _lookup(unseen or [], classes, "unseen", source)
    dropped = [*children, *ignored, *held_out]
    twice = sorted({classes[k] for k in dropped if dropped.count(k) > 1})
    if twice:
        raise ClipfuseError(
            f"data.dataset_kwargs: {', '.join(twice)} named more than once in merge (as a "
            "child) / ignore / unseen: expected each class in at most one of them"
        )
    for child, parent in zip(children, parents, strict=True):
        if parent in dropped:
            raise ClipfuseError(
                f"data.dataset_kwargs.merge: {classes[child]} -> {classes[parent]}, but "
                f"{classes[parent]} is itself merged, ignored or unseen: expected a kept parent"
            )
    kept = [k for k in range(len(classes)) if k not in dropped]
    if not kept:
        raise ClipfuseError(f"data.dataset_kwargs leave no class of {source} to train on")
    train_id = {raw: new for new, raw in enumerate(kept)}
    table = np.full(256, len(kept), dtype=np.uint8)
    table[IGNORE_INDEX] = IGNORE_INDEX
    for raw in range(len(classes)):
        table[raw] = train_id.get(raw, IGNORE_INDEX)
    for child, parent in zip(children, parents, strict=True):
        table[child] = train_id[parent]
    return Relabeling(tuple(classes[k] for k in kept), table, tuple(classes[k] for k in held_out))
