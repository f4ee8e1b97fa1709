"""Run configuration: YAML files plus ``section.key=value`` overrides.

A config has five sections whose keys are the arguments of the objects they build:
``model`` (:func:`clipfuse.models.create_model`), ``text`` (:func:`clipfuse.text.embed_class_names`),
``data`` (:class:`clipfuse.engine.SegmentationDataModule`), ``train``
(:class:`clipfuse.engine.SegmentationTask` and the Lightning ``Trainer``) and ``eval``
(:class:`clipfuse.evaluation.InferenceConfig`). Unknown keys are errors, never ignored.

A file may start from others with ``_base_: [relative.yaml, ...]`` (merged in order, then
the file itself on top), as mmseg's configs do.

An override that gives a free-form mapping (``*_kwargs``, ``text.aliases``) as a whole
replaces it: ``text.aliases={}`` (or ``null``) clears the aliases, while
``model.head_kwargs.dim=256`` sets one key and keeps the others.

Paths may start with ``shared:`` to mean the shared folder (``$CLIPFUSE_SHARED`` or
``../shared``), e.g. ``shared:weights/mobilenetv2_100_in1k.pth``.

A saved config (a checkpoint's, a pretrained folder's, a run folder's) is read back with
:func:`with_defaults`, which also applies :func:`upgrade_config`: what a model saved by an
older clipfuse meant, spelled as today's keys.
"""

import copy
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from clipfuse.errors import ClipfuseError, announce
from clipfuse.fileio import atomic_write_text
from clipfuse.paths import shared_root

# The format version of saved models (training checkpoints and pretrained folders):
# 1: the first; 2: Conv-Former's ``text_scale`` exists (version 1 models had no scaling);
# 3: Conv-Former's ``gate_init`` exists and defaults to 1e-4 (older models had no gates);
# 4: ``text.encoder: random:D`` draws per seed (older models used draw 0), ``text.shuffle``.
FORMAT_VERSION = 4

# Old method names, read as today's: "fpn" was the no-text Semantic FPN (also a decoder name).
RENAMED_METHODS = {"fpn": "plain"}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "model": {
        "method": "plain",
        "backbone": "mobilenetv2_100",
        "decoder": "fpn",
        "backbone_kwargs": {},
        "head_kwargs": {},
        "decoder_kwargs": {},
        "text_classifier": False,  # LSeg-style: decoder pixel embeddings . class text vectors
    },
    "text": {
        "encoder": "auto",
        "allow_mismatch": False,
        "template": "a photo of a {}.",
        "aliases": {},
        "fallback": None,
        "learnable_context": 0,
        "shuffle": False,  # the shuffled-CLIP control: true (a draw per seed) or a draw K
    },
    "data": {
        "dataset": "camvid",
        "root": None,
        "dataset_kwargs": {},
        "crop_size": [512, 512],
        "base_size": None,
        "scale_range": [0.5, 2.0],
        "cat_max_ratio": 0.75,
        "val_size": None,
        "batch_size": 8,
        "val_batch_size": 1,
        "num_workers": 2,
        "eval_split": "val",
    },
    "train": {
        "max_steps": 1000,
        "optimizer": "sgd",
        "lr": 0.01,
        "weight_decay": 5e-4,
        "momentum": 0.9,
        "backbone_lr_mult": 0.1,
        "head_lr_mult": 1.0,
        "warmup_steps": 0,
        "poly_power": 0.9,
        "aux_weight": 0.4,
        "aux_temperature": 0.07,
        "precision": "auto",  # bf16-mixed where the CPU / GPU has native bf16, else 32-true
        "channels_last": "auto",  # follows precision: channels-last under mixed precision
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "val_every": 1000,
        "checkpoint_every": 200,
        "log_every": 10,
        "progress_bar": True,
    },
    "eval": {
        "mode": "whole",
        "crop_size": None,
        "stride": None,
        "flip": False,
        "scales": [1.0],
        "precision": "auto",
    },
}

# Sections whose contents are free-form keyword arguments, checked by the object they build.
_FREE_FORM = {"backbone_kwargs", "head_kwargs", "decoder_kwargs", "dataset_kwargs", "aliases"}


class _Replace(dict):
    """An override's whole mapping for a free-form key (``text.aliases={...}``): it replaces
    the mapping, where ``model.head_kwargs.dim=256`` sets one key in it."""


def current_method(method: str | None) -> str | None:
    """Today's name of ``method`` (:data:`RENAMED_METHODS`); other names pass through."""
    return RENAMED_METHODS.get(method, method)


@functools.cache
def _note_renamed_method(old: str) -> None:
    """Once per process: the old name is read as the new one."""
    announce(f"model.method {old!r} is now called {RENAMED_METHODS[old]!r}: read as that")


def _merge(base: dict, update: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}.{key}" if where else key
        if path == "model.method" and value in RENAMED_METHODS:
            _note_renamed_method(value)
            value = RENAMED_METHODS[value]
        if key not in base:
            known = ", ".join(sorted(base))
            raise ClipfuseError(f"unknown config key {path!r}: expected one of {known}")
        if isinstance(base[key], dict) and key not in _FREE_FORM:
            if not isinstance(value, dict):
                raise ClipfuseError(f"config key {path!r} must be a mapping, got {value!r}")
            merged[key] = _merge(base[key], value, path)
        elif key in _FREE_FORM:
            if value is not None and not isinstance(value, dict):
                raise ClipfuseError(f"config key {path!r} must be a mapping or null, got {value!r}")
            if value is None or isinstance(value, _Replace):  # {} or null clears it
                merged[key] = copy.deepcopy(dict(value or {}))
            else:
                merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def _set(config: dict, dotted: str, value: Any) -> None:
    """Set ``dotted`` in an override mapping (sections created as needed)."""
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ClipfuseError(f"override {dotted!r}: {part!r} is not a section")
    if leaf in _FREE_FORM and (value is None or isinstance(value, dict)):
        value = _Replace(value or {})
    node[leaf] = value


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["model.method=convformer", "train.lr=0.001"]`` -> a nested dict (values parsed as YAML)."""
    update: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ClipfuseError(f"override {item!r} must look like section.key=value")
        _set(update, key.strip(), yaml.safe_load(raw))
    return update


def _deep_update(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """One config file with its ``_base_`` files merged underneath it (not yet validated)."""
    if not path.is_file():
        raise ClipfuseError(f"config file {path} not found")
    if path.resolve() in seen:
        raise ClipfuseError(f"config file {path} includes itself through _base_")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ClipfuseError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(loaded, dict):
        raise ClipfuseError(f"config file {path} must hold a mapping of sections")
    bases = loaded.pop("_base_", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _deep_update(merged, _read_yaml(path.parent / base, (*seen, path.resolve())))
    return _deep_update(merged, loaded)


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """``config`` with ``section.key=value`` overrides applied, every key validated."""
    return _merge(config, parse_overrides(overrides), "")


def replace_key(config: dict, dotted: str, value: Any) -> None:
    """Set the existing dotted key of ``config`` to ``value`` outright, in place: a mapping
    such as ``model.head_kwargs`` is replaced, not merged key by key (validate afterwards
    with :func:`with_defaults`)."""
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ClipfuseError(f"config key {dotted!r} does not exist")
        node = node[part]
    if leaf not in node:
        raise ClipfuseError(f"config key {dotted!r} does not exist")
    node[leaf] = copy.deepcopy(value)


def changed_keys(old: dict, new: dict, where: str = "") -> dict[str, tuple]:
    """Dotted key -> (old, new) for every setting that differs (an absent key is None)."""
    changed: dict[str, tuple] = {}
    for key in sorted(set(old) | set(new)):
        path = f"{where}.{key}" if where else key
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict) and before and after:
            changed.update(changed_keys(before, after, path))
        elif before != after:
            changed[path] = (before, after)
    return changed


def upgrade_config(config: dict, format_version: int) -> dict:
    """``config`` of a model saved at ``format_version`` (see :data:`FORMAT_VERSION`), with
    the settings it was trained with that today's defaults no longer imply made explicit."""
    text = config.get("text") or {}
    encoder = text.get("encoder")
    if format_version < 4 and isinstance(encoder, str) and encoder.startswith("random:"):
        if encoder.count(":") == 1:
            config = {**config, "text": {**text, "encoder": f"{encoder}:0"}}
    model = config.get("model") or {}
    if current_method(model.get("method")) != "convformer":
        return config
    head_kwargs = dict(model.get("head_kwargs") or {})
    if format_version < 2:
        head_kwargs.setdefault("text_scale", "none")
    if format_version < 3:
        head_kwargs.setdefault("gate_init", None)
    return {**config, "model": {**model, "head_kwargs": head_kwargs}}


def with_defaults(config: dict, format_version: int = FORMAT_VERSION) -> dict:
    """A saved config (a checkpoint's, a pretrained folder's, a run folder's) written at
    ``format_version``: upgraded (:func:`upgrade_config`) and completed with the keys added
    to :data:`DEFAULTS` since; every key validated."""
    return _merge(copy.deepcopy(DEFAULTS), upgrade_config(config, format_version), "")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """Defaults, then the YAML file (and its ``_base_`` files), then the overrides; every key
    validated."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        config = _merge(config, _read_yaml(Path(path)), "")
    return apply_overrides(config, overrides)


def resolve_path(value: str | Path | bool | None) -> str | bool | None:
    """Expand ``shared:`` and ``~`` in a path-like config value (other values pass through,
    so ``backbone_kwargs.pretrained: true`` stays a bool)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value)
    if text.startswith("shared:"):
        return str(shared_root() / text.removeprefix("shared:"))
    return str(Path(text).expanduser()) if text.startswith("~") else text


def resolve_spec(spec: str) -> str:
    """Expand ``shared:`` inside a ``prefix:path`` text-encoder spec such as ``bank:shared:text``."""
    prefix, sep, rest = spec.partition(":")
    if sep and rest.startswith("shared:"):
        return f"{prefix}:{resolve_path(rest)}"
    return spec


def dump_config(config: dict, path: str | Path) -> None:
    """Write the full config as YAML (written beside every run's results), atomically."""
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
