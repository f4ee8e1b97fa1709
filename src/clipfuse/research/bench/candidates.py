"""The models ``clipfuse bench`` compares: configs (built with random weights by
:func:`clipfuse.build.cost_model`) and the segmentation_models_pytorch reference."""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from clipfuse.errors import ClipfuseError, announce
from clipfuse.extras import require
from clipfuse.losses import loss_arguments
from clipfuse.research.bench.timing import mode_steps

SMP_NAME = "smp-FPN"


@dataclass
class Candidate:
    """One row: a name and what the memory subprocess needs to rebuild the model."""

    name: str
    spec: dict  # {"config": dict} or {"smp": {"backbone": str, "classes": int}}
    info: dict = field(default_factory=dict)
    model: nn.Module | None = None


def create_from_spec(spec: dict) -> tuple[nn.Module, dict]:
    """The model of a candidate spec (random init) and facts about it."""
    if "smp" in spec:
        smp = require("segmentation_models_pytorch", "bench --smp-reference")

        opts = spec["smp"]
        model = smp.FPN(f"tu-{opts['backbone']}", encoder_weights=None, classes=opts["classes"])
        info = {"method": "smp-fpn", "backbone": opts["backbone"], "num_classes": opts["classes"]}
        return model, info
    from clipfuse.build import class_names_of, cost_model

    config = spec["config"]
    class_names = class_names_of(config)
    model = cost_model(config, class_names)
    return model, _info(config, class_names)


def _info(config: dict, class_names: list[str]) -> dict:
    model = config["model"]
    return {
        "method": model["method"],
        "backbone": model["backbone"],
        "decoder": model["decoder"],
        "head_kwargs": dict(model["head_kwargs"]),
        "num_classes": len(class_names),
    }


def candidate_loss_args(spec: dict) -> dict:
    """The loss settings of a candidate's config, as the engine reads them (smp has none)."""
    if "config" not in spec:
        return {}
    from clipfuse.build import class_names_of

    config = spec["config"]
    return loss_arguments(config.get("train", {}), class_names_of(config))


def candidate_mode_steps(
    candidates: Sequence["Candidate"],
    modes: Sequence[tuple[str, bool]],
    images: torch.Tensor,
    labels: torch.Tensor,
) -> Iterator[tuple["Candidate", tuple[str, bool], nn.Module, Callable[..., None]]]:
    """``(candidate, mode, copy, step)`` for every candidate in every (precision, channels-last)
    mode: :func:`~clipfuse.research.bench.timing.mode_steps` with the candidate's loss, the training
    steps bench times and its ``--train-profile`` cuts into parts."""
    for candidate in candidates:
        loss_args = candidate_loss_args(candidate.spec)
        for mode, model, step in mode_steps(candidate.model, modes, images, labels, loss_args):
            yield candidate, mode, model, step


def _timed_class_weight(config: dict, name: str) -> dict:
    """``config`` with ``train.class_weight: balanced`` timed as weights of 1, announced: the
    cost of a weighted cross-entropy does not depend on the weights, and counting the
    training set's pixels is ``clipfuse train``'s work."""
    train = config.get("train", {})
    if train.get("class_weight") != "balanced":
        return config
    from clipfuse.build import class_names_of

    announce(f"bench: {name}'s train.class_weight balanced is timed with weights of 1")
    weights = [1.0] * len(class_names_of(config))
    return {**config, "train": {**train, "class_weight": weights}}


def load_candidates(
    configs: Sequence[str | Path | dict], smp_reference: bool, overrides: Sequence[str] | None
) -> list[Candidate]:
    from clipfuse.config import load_config
    from clipfuse.config_files import resolve_config_file

    candidates = []
    for item in configs:
        if isinstance(item, dict):
            config = item
            name = config.get("name") or config["model"]["method"]
            config = {k: v for k, v in config.items() if k != "name"}
        else:
            path = resolve_config_file(item)  # a file, else a shipped config's name
            if not path.is_file():
                raise ClipfuseError(f"bench: config {path} not found")
            config = load_config(path, list(overrides or []))
            name = path.stem
        candidates.append(Candidate(name, {"config": _timed_class_weight(config, name)}))
    if not candidates:
        raise ClipfuseError("bench: give at least one config")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ClipfuseError(f"bench: two configs have the same name: {names}")
    if smp_reference:
        first = candidates[0].spec["config"]
        from clipfuse.build import class_names_of

        classes = len(class_names_of(first))
        spec = {"smp": {"backbone": first["model"]["backbone"], "classes": classes}}
        candidates.append(Candidate(SMP_NAME, spec))
    return candidates
