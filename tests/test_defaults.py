"""One source for every default: each keyword default of a function or class that a config
section feeds equals the schema's default for that key (:mod:`clipfuse.config_schema`), so a
default changed on one side only fails here.

The library keeps readable defaults in its signatures (``segmentation_loss(outputs, masks)``
in a user's own training loop is the paper's recipe), and the schema stays free of torch; what
only a config ever builds (the schedule of :class:`~clipfuse.engine.SegmentationTask`) has no
default of its own."""

import inspect
from collections.abc import Callable, Mapping

import pytest

from clipfuse.cli import build_parser
from clipfuse.config_schema import default_config
from clipfuse.data.transforms import create_train_transform
from clipfuse.engine import (
    PolyWithWarmup,
    SegmentationDataModule,
    SegmentationTask,
    create_optimizer,
    parameter_groups,
)
from clipfuse.evaluation.tta import InferenceConfig, infer_probabilities, view_logits
from clipfuse.losses import segmentation_loss
from clipfuse.models import create_model
from clipfuse.precision import resolve_precision
from clipfuse.research.bench.bench import bench
from clipfuse.text import TextEncoder, cache_key, embed_class_names

SCHEMA = default_config()

# What each section's keys reach: (callable, section, {parameter: "section.key", or None for a
# parameter of the same name that is not that key}). A parameter with a default and the name
# of a key of its section is compared without being listed.
FED: list[tuple[Callable, str, Mapping[str, str | None]]] = [
    (create_model, "model", {}),
    (SegmentationDataModule, "data", {"seed": "seed"}),
    (create_train_transform, "data", {}),
    # channels_last: the bool that train.channels_last: auto resolves to (clipfuse.precision)
    (
        SegmentationTask,
        "train",
        {"negatives_per_step": "text.negatives_per_step", "channels_last": None},
    ),
    (create_optimizer, "train", {}),
    (parameter_groups, "train", {}),
    (PolyWithWarmup, "train", {"power": "train.poly_power"}),
    (segmentation_loss, "train", {}),
    (resolve_precision, "train", {}),
    (InferenceConfig, "eval", {}),
    (infer_probabilities, "eval", {}),
    (view_logits, "eval", {}),
    (embed_class_names, "text", {}),
    (cache_key, "text", {}),
    (TextEncoder.encode, "text", {}),
]


def _schema_default(dotted: str):
    value = SCHEMA
    for part in dotted.split("."):
        value = value[part]
    return value


def _plain(value, schema_value):
    """``value`` as the schema writes it: tuples as lists; None for an empty mapping."""
    if value is None and schema_value == {}:
        return {}
    if isinstance(value, tuple | list):
        return [_plain(item, None) for item in value]
    return value


def _compared(fn: Callable, section: str, names: Mapping[str, str | None]) -> dict[str, str]:
    """Parameter -> the dotted schema key its default must equal."""
    keys = {}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.default is parameter.empty:
            continue
        dotted = names.get(parameter.name, f"{section}.{parameter.name}")
        if dotted is not None and dotted.split(".")[-1] in _section(dotted):
            keys[parameter.name] = dotted
    return keys


def _section(dotted: str) -> Mapping:
    return SCHEMA if "." not in dotted else _schema_default(dotted.rpartition(".")[0])


@pytest.mark.parametrize(
    ("fn", "section", "names"), FED, ids=lambda x: getattr(x, "__qualname__", "")
)
def test_keyword_defaults_equal_the_schemas(fn, section, names):
    compared = _compared(fn, section, names)
    assert compared, f"{fn.__qualname__} shares no defaulted keyword with config section {section}"
    signature = inspect.signature(fn).parameters
    drifted = {
        name: (signature[name].default, _schema_default(dotted))
        for name, dotted in compared.items()
        if _plain(signature[name].default, _schema_default(dotted)) != _schema_default(dotted)
    }
    assert not drifted, f"{fn.__qualname__}: (its default, the schema's) {drifted}"


def test_every_renamed_parameter_names_a_schema_key():
    for fn, _, names in FED:
        parameters = inspect.signature(fn).parameters
        for name, dotted in names.items():
            assert name in parameters, f"{fn.__qualname__} has no parameter {name}"
            if dotted is not None:
                _schema_default(dotted)  # a KeyError: the key is gone


def test_what_only_a_config_builds_has_no_default_of_its_own():
    parameters = inspect.signature(SegmentationTask).parameters
    for name in ("max_steps", "warmup_steps", "poly_power"):
        assert parameters[name].default is inspect.Parameter.empty, name


def test_eval_precision_is_auto_everywhere():
    """``clipfuse eval`` / ``predict`` read ``eval.precision`` (auto: clipfuse.precision's
    inference verdict); a direct call of the inference functions runs the same way."""
    assert SCHEMA["eval"]["precision"] == "auto"
    assert InferenceConfig().precision == "auto"
    for fn in (infer_probabilities, view_logits):
        assert inspect.signature(fn).parameters["precision"].default == "auto"


# clipfuse bench's options whose name differs from bench()'s parameter (the others: the same)
BENCH_OPTIONS = {"batch": "batches", "train_precision": "train_precisions"}


def test_clipfuse_bench_passes_bench_its_own_defaults():
    """The command line keeps its defaults beside its help texts (it imports no torch to parse);
    each equals bench()'s."""
    parsed = vars(build_parser().parse_args(["bench", "--config", "a.yaml"]))
    parameters = inspect.signature(bench).parameters
    compared = {
        BENCH_OPTIONS.get(option, option): value
        for option, value in parsed.items()
        if BENCH_OPTIONS.get(option, option) in parameters and option != "overrides"
    }
    assert len(compared) >= 12, sorted(compared)
    drifted = {
        name: (value, parameters[name].default)
        for name, value in compared.items()
        if _plain(value, None) != _plain(parameters[name].default, None)
    }
    assert not drifted, f"(the command's default, bench()'s) {drifted}"
