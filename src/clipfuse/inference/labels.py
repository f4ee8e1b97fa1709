"""Labels chosen at inference: a subset / renaming of the trained vocabulary, or new labels.

A label is a *query* (what is looked up: a trained class name, one of the text aliases of a
trained class, or, in open-vocabulary mode, any text the encoder can embed) and a *display
name* (what the result calls it). ``"Road"`` queries and shows Road; ``"Road=street"`` (or the
mapping ``{"Road": "street"}``) queries Road and shows "street".
"""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipfuse.errors import ClipfuseError
from clipfuse.text.base import normalize_name

LabelsArg = str | Sequence[str] | Mapping[str, str] | None
"""What ``labels=`` accepts: None (every trained class), ``"a, b=c"``, ``["a", "b=c"]`` or
``{"a": "a", "b": "c"}``."""


@dataclass(frozen=True)
class LabelChoice:
    """The resolved labels of one prediction, in output order.

    ``names`` are the display names (the result's ``class_names``); ``queries`` the text of each
    label; ``indices`` the trained class of each label, or None for a label outside the trained
    vocabulary (open vocabulary only).
    """

    names: tuple[str, ...]
    queries: tuple[str, ...]
    indices: tuple[int | None, ...]

    @property
    def new_queries(self) -> list[str]:
        return [q for q, i in zip(self.queries, self.indices, strict=True) if i is None]


def _pair(item: str) -> tuple[str, str]:
    if not isinstance(item, str):
        raise ClipfuseError(f"labels: expected names (strings), got {item!r}")
    query, sep, display = item.partition("=")
    query, display = query.strip(), display.strip()
    if not query or (sep and not display):
        raise ClipfuseError(f"labels: {item!r} is empty: expected 'name' or 'name=display name'")
    return query, display or query


def parse_labels(labels: LabelsArg) -> list[tuple[str, str]] | None:
    """``(query, display name)`` pairs, or None for "every trained class".

    A string is split at commas; each item may be ``query=display``. A mapping maps queries to
    display names. Blank items and two labels with the same display name are errors.
    """
    if labels is None:
        return None
    if isinstance(labels, str):
        items = [part for part in labels.split(",") if part.strip()]
        pairs = [_pair(item) for item in items]
    elif isinstance(labels, Mapping):
        pairs = [_pair(f"{query}={display}") for query, display in labels.items()]
    else:
        pairs = [_pair(item) for item in labels]
    if not pairs:
        raise ClipfuseError(
            "labels: none given: expected at least one name (leave labels out for every "
            "trained class)"
        )
    seen: dict[str, str] = {}
    for _, display in pairs:
        key = normalize_name(display)
        if key in seen:
            raise ClipfuseError(f"labels: {seen[key]!r} and {display!r} name the same label twice")
        seen[key] = display
    return pairs


def trained_lookup(class_names: Sequence[str], aliases: Mapping[str, str] | None) -> dict[str, int]:
    """Normalised name -> trained class index: each class name, and the alias target of each
    class (a CamVid model trained with ``Pedestrian: person`` answers to "person")."""
    lookup = {normalize_name(name): k for k, name in enumerate(class_names)}
    by_name = dict(lookup)
    for source, target in (aliases or {}).items():
        k = by_name.get(normalize_name(source))
        if k is not None:
            lookup.setdefault(normalize_name(target), k)
    return lookup


def name_index(names: Sequence[str]) -> dict[str, int]:
    """Normalised name -> its index in ``names``."""
    return {normalize_name(name): k for k, name in enumerate(names)}


def find_name(name: str, index: dict[str, int], names: Sequence[str], what: str) -> int:
    """The index of ``name`` in ``names`` (``index`` from :func:`name_index`), or a one-line
    error naming ``what`` was looked up."""
    k = index.get(normalize_name(name))
    if k is None:
        raise ClipfuseError(f"{what} {name!r} is unknown: expected one of {', '.join(names)}")
    return k


def parse_class_map(
    pairs: Sequence[str] | None,
    trained: Sequence[str],
    classes: Sequence[str],
    aliases: Mapping[str, str] | None,
    option: str = "--map",
    sides: tuple[str, str] = ("model class", "dataset class"),
) -> dict[int, int]:
    """``["Tree=vegetation", ...]`` as trained index -> dataset index; None: every dataset
    class that is a trained class (or a text alias of one) maps to it. ``option`` names the
    pairs' source in error messages, ``sides`` the two sides of a pair."""
    if pairs is None:
        lookup = trained_lookup(trained, aliases)
        found = {lookup.get(normalize_name(name)): d for d, name in enumerate(classes)}
        return {k: d for k, d in found.items() if k is not None}
    trained_index, class_index = name_index(trained), name_index(classes)
    mapping: dict[int, int] = {}
    for pair in pairs:
        model_class, sep, dataset_class = pair.partition("=")
        if not sep or not model_class.strip() or not dataset_class.strip():
            shape = "=".join(side.upper().replace(" ", "_") for side in sides)
            raise ClipfuseError(f"{option} {pair!r}: expected {shape}")
        k = find_name(model_class.strip(), trained_index, trained, f"{option}: {sides[0]}")
        if k in mapping:
            raise ClipfuseError(f"{option}: {sides[0]} {trained[k]!r} is mapped twice")
        mapping[k] = find_name(dataset_class.strip(), class_index, classes, f"{option}: {sides[1]}")
    return mapping


def resolve_labels(
    labels: LabelsArg,
    class_names: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    open_vocab: bool = False,
    open_vocab_hint: str = "",
) -> LabelChoice:
    """Match the requested labels to the trained vocabulary.

    Without ``open_vocab`` every label must be a trained class (or one of its aliases); the
    error lists the unknown ones and the trained vocabulary (``open_vocab_hint`` is appended).
    With ``open_vocab`` unknown labels are kept with index None, to be embedded.
    """
    pairs = parse_labels(labels)
    if pairs is None:
        names = tuple(class_names)
        return LabelChoice(names, names, tuple(range(len(names))))
    lookup = trained_lookup(class_names, aliases)
    indices = tuple(lookup.get(normalize_name(query)) for query, _ in pairs)
    unknown = [query for (query, _), k in zip(pairs, indices, strict=True) if k is None]
    if unknown and not open_vocab:
        raise ClipfuseError(
            f"unknown label(s) {', '.join(map(repr, unknown))}: the model was trained on "
            f"{', '.join(class_names)}{open_vocab_hint}"
        )
    chosen = [k for k in indices if k is not None]
    if len(set(chosen)) != len(chosen):
        twice = sorted({class_names[k] for k in chosen if chosen.count(k) > 1})
        raise ClipfuseError(f"labels: trained class(es) {', '.join(twice)} requested twice")
    return LabelChoice(
        tuple(display for _, display in pairs),
        tuple(query for query, _ in pairs),
        indices,
    )


def label_colour(name: str) -> np.ndarray:
    """A colour for a label outside the trained vocabulary, fixed by its name."""
    digest = hashlib.sha256(normalize_name(name).encode()).digest()
    seed = int.from_bytes(digest[:8], "little")
    return np.random.default_rng(seed).integers(32, 256, size=3, dtype=np.uint8)


def dataset_palette(config: dict, class_names: list[str]) -> np.ndarray | None:
    """The training dataset's colours when it is on this machine, else None."""
    from clipfuse.data import create_config_dataset

    try:
        dataset = create_config_dataset(config, "val")
    except Exception:  # absent or unreadable: the default palette will do
        return None
    palette = np.asarray(dataset.palette)
    return palette if palette.shape == (len(class_names), 3) else None
