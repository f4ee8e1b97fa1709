"""Run configuration: YAML files plus ``section.key=value`` overrides.

A config has a ``seed`` and five sections. Three hold constructor arguments: ``model``
those of :func:`clipfuse.models.create_model` (passed one by one by :mod:`clipfuse.build`),
``data`` those of :class:`clipfuse.engine.SegmentationDataModule` and ``eval`` the fields of
:class:`clipfuse.evaluation.InferenceConfig`. ``text`` says how the class names are embedded:
:mod:`clipfuse.text.resolve` picks the encoder and calls
:func:`clipfuse.text.embed_class_names`. ``train`` is split by hand in
:mod:`clipfuse.engine.run`: the optimiser, schedule and loss keys and ``channels_last`` go to
:class:`clipfuse.engine.SegmentationTask`; ``max_steps``, the device keys, ``precision``,
``val_every`` and ``log_every`` to Lightning's ``Trainer``; ``checkpoint_every``,
``progress_bar`` and ``log_every`` to its callbacks; ``threads`` sets torch's thread count
(:mod:`clipfuse.threads`), and ``precision`` / ``channels_last: auto`` are resolved first
(:mod:`clipfuse.precision`). Unknown keys are errors, never ignored, and
every value is checked against :mod:`clipfuse.config_schema` (types, ranges, choices) whenever
a config is loaded, overridden or read back, before anything is built or written.

YAML is read by :func:`parse_yaml`, in files and in override values alike: ``1e-3`` is a
number (as in YAML 1.2), a key given twice is an error, and so are aliases that expand a
document beyond :data:`MAX_VALUES` values. An empty config file is an error.

A file may start from others with ``_base_: [relative.yaml, ...]`` (merged in order, then
the file itself on top), as mmseg's configs do.

An override that gives a free-form mapping (``*_kwargs``, ``text.aliases``) as a whole
replaces it: ``text.aliases={}`` (or ``null``) clears the aliases, while
``model.head_kwargs.dim=256`` sets one key and keeps the others.

Paths may start with ``shared:`` to mean the shared folder (``$CLIPFUSE_SHARED`` or
``../shared``), e.g. ``shared:weights/mobilenetv2_100_in1k.pth``. Where such a file is absent
(a clone without the shared folder), :mod:`clipfuse.sources` names its public source (timm's
weights, an open_clip text tower, ``clipfuse data download``), announced.

A saved config (a checkpoint's, a pretrained folder's) is read back with :func:`with_defaults`,
a run folder's ``config.yaml`` with :func:`load_config` at the folder's format version
(:mod:`clipfuse.engine.run_folder`); both apply :func:`upgrade_config`: what a model saved by
an older clipfuse meant, spelled as today's keys.

This module is not model-free: :func:`upgrade_config` knows the ``convformer`` method's
``head_kwargs`` (``text_scale``, ``gate_init``) and the ``random:`` text-encoder spec,
:data:`RENAMED_METHODS` the old method name ``fpn``, and :func:`resolve_spec` expands
``shared:`` inside a ``prefix:path`` text-encoder spec; :mod:`clipfuse.config_schema` checks
methods, decoders, datasets and encoder specs against their registries."""

import copy
import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clipfuse.config_files import resolve_config_file
from clipfuse.config_schema import default_config, validate_config
from clipfuse.errors import ClipfuseError, announce
from clipfuse.fileio import atomic_write_text
from clipfuse.paths import shared_root

# The format version of saved models (training checkpoints, pretrained folders) and run folders:
# 1: the first; 2: Conv-Former's ``text_scale`` exists (version 1 models had no scaling);
# 3: Conv-Former's ``gate_init`` exists and defaults to 1e-4 (older models had no gates);
# 4: ``text.encoder: random:D`` draws per seed (older models used draw 0), ``text.shuffle``.
FORMAT_VERSION = 4

# Old method names, read as today's: "fpn" was the no-text Semantic FPN (also a decoder name).
# Still read by shipped records: docs/research/results/*/results.json rows (`clipfuse experiment
# --from`)
# and best_config.yaml files (docs/research/results.md retrains camvid_claims's) spell method fpn.
RENAMED_METHODS = {"fpn": "plain"}

# Every key with its default (the schema, clipfuse.config_schema, says what each accepts).
DEFAULTS: dict[str, Any] = default_config()

# A config holds a few hundred values; YAML aliases (``*name``) that expand it beyond this are
# refused (a "billion laughs" document of nested aliases expands to billions).
MAX_VALUES = 10_000

# Sections whose contents are free-form keyword arguments, checked by the object they build.
_FREE_FORM = {"backbone_kwargs", "head_kwargs", "decoder_kwargs", "dataset_kwargs", "aliases"}


class _Replace(dict):
    """An override's whole mapping for a free-form key (``text.aliases={...}``): it replaces
    the mapping, where ``model.head_kwargs.dim=256`` sets one key in it."""


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, changed for configs: ``1e-3`` is a number (YAML 1.2; YAML 1.1
    reads it as a string unless written ``1.0e-3``) and a key given twice is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            seen = (type(key), key)  # 1 and true are different keys
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and seen in lines:
                raise ClipfuseError(
                    f"{self.where}: key {key!r} is given twice (lines {lines[seen]} and {line})"
                )
            lines[seen] = line
        return super().construct_mapping(node, deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values in ``node`` with every alias expanded (a node inside itself: endless)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_VALUES + 1
    children: list = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document ``text`` (None when it holds none) read by the config loader; errors
    name ``where`` (``config file runs/a.yaml``): bad YAML, a key given twice, and aliases
    that expand it beyond :data:`MAX_VALUES` values."""
    loader = _ConfigLoader(text)
    loader.where = loader.name = where  # name: what YAML's own messages say it reads
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_VALUES:
            raise ClipfuseError(
                f"{where} holds more than {MAX_VALUES:,} values once its YAML aliases (*name) "
                "are expanded: refused (an alias bomb?); write the values out instead"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ClipfuseError(f"{where} is not valid YAML: {error}") from error
    except RecursionError:
        raise ClipfuseError(f"{where} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


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
            close = difflib.get_close_matches(key, base, n=1)
            near = [f"{where}.{name}" if where else name for name in close]
            hint = f"did you mean {near[0]!r}? " if near else ""
            known = ", ".join(sorted(base))
            raise ClipfuseError(f"unknown config key {path!r}: {hint}expected one of {known}")
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
        _set(update, key.strip(), parse_yaml(raw, f"override {key.strip()}=..."))
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
    loaded = parse_yaml(path.read_text(), f"config file {path}")
    if loaded is None or loaded == {}:
        raise ClipfuseError(
            f"config file {path} is empty: expected a mapping of sections ({', '.join(DEFAULTS)})"
        )
    if not isinstance(loaded, dict):
        raise ClipfuseError(f"config file {path} must hold a mapping of sections")
    bases = loaded.pop("_base_", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _deep_update(merged, _read_yaml(path.parent / base, (*seen, path.resolve())))
    return _deep_update(merged, loaded)


def _validated(config: dict) -> dict:
    validate_config(config)
    return config


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """``config`` with ``section.key=value`` overrides applied, every key and value validated
    (:mod:`clipfuse.config_schema`)."""
    return _validated(_merge(config, parse_overrides(overrides), ""))


def _replace_key(config: dict, dotted: str, value: Any) -> None:
    """Set the existing dotted key of ``config`` to ``value`` outright, in place."""
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ClipfuseError(f"config key {dotted!r} does not exist")
        node = node[part]
    if leaf not in node:
        raise ClipfuseError(f"config key {dotted!r} does not exist")
    node[leaf] = copy.deepcopy(value)


class _Absent:
    """What :func:`changed_keys` gives for a key one side lacks: in a ``*_kwargs`` mapping an
    absent key means the built class's default, not None (``gate_init: null`` is no gates)."""

    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def changed_keys(old: dict, new: dict, where: str = "") -> dict[str, tuple]:
    """Dotted key -> (old, new) for every setting that differs (a key one side lacks is
    shown as ``absent``)."""
    changed: dict[str, tuple] = {}
    for key in sorted(set(old) | set(new)):
        path = f"{where}.{key}" if where else key
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
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
    to :data:`DEFAULTS` since; every key and value validated."""
    return _validated(_merge(copy.deepcopy(DEFAULTS), upgrade_config(config, format_version), ""))


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    replace: Mapping[str, Any] | None = None,
    format_version: int = FORMAT_VERSION,
) -> dict:
    """Defaults, then the YAML file ``path`` (a file, else the name of a shipped config:
    :func:`clipfuse.config_files.resolve_config_file`), with its ``_base_`` files (upgraded by
    :func:`upgrade_config` when written at an older ``format_version``), then ``replace`` (each dotted key set to its
    value outright: a mapping such as ``model.head_kwargs`` is replaced, not merged key by
    key), then the overrides; every key and value validated once, at the end."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        file = resolve_config_file(path)
        config = _merge(config, upgrade_config(_read_yaml(file), format_version), "")
    if replace:
        for dotted, value in replace.items():
            _replace_key(config, dotted, value)
        config = _merge(copy.deepcopy(DEFAULTS), config, "")  # a replaced section completed
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
