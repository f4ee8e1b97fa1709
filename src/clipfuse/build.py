"""From a run config or a saved model to a :class:`~clipfuse.models.Segmentor`: the one way
the engine, the command line, the benchmark, export and inference build a model.

* :func:`create_model_from_config`: run config -> class names' text embeddings -> ``Segmentor``;
* :func:`load_model`: a training checkpoint or a pretrained folder -> the ``Segmentor`` with
  its weights, strict-checked (:func:`clipfuse.saved_model.load_weights`);
* :func:`cost_model`: the model with random weights, for counting and timing;
* :func:`initialise_from`: a new model's weights from a trained one of other classes
  (``train.init_from``, :mod:`clipfuse.models.class_transfer`).

Which text encoder embeds the class names is :mod:`clipfuse.text.resolve`'s policy; this
module only assembles. Lightning-free.
"""

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from clipfuse.config import apply_overrides, resolve_path
from clipfuse.data import dataset_classes
from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.inference.labels import parse_class_map
from clipfuse.models import Segmentor, create_model, method_uses_text
from clipfuse.models.class_transfer import ClassAxes, transfer_state
from clipfuse.saved_model import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_weights,
    read_pretrained,
)
from clipfuse.sources import with_backbone_source
from clipfuse.text import create_prompt_encoder
from clipfuse.text.resolve import cost_embeddings, embed_classes, resolve_text_encoder, text_spec


def class_names_of(config: dict) -> list[str]:
    """The class names of the dataset of ``config``."""
    data = config["data"]
    return dataset_classes(data["dataset"], root=data["root"], **data["dataset_kwargs"])


def create_model_from_config(
    config: dict,
    class_names: list[str],
    text_embeddings: torch.Tensor | None = None,
    pretrained: bool = True,
) -> Segmentor:
    """The model of ``config``; text embeddings are computed (cached) unless given.

    With ``pretrained`` the one-line notes say where the backbone's weights come from (a
    download unless cached) and how DenseCLIP's attention pool starts. The model carries a
    copy of ``config`` and ``class_names`` as ``model.config`` and ``model.class_names``.
    Where a ``shared:`` backbone weight file is absent, timm's weights of the backbone stand
    in (:func:`~clipfuse.sources.with_backbone_source`, announced; ``model.config`` says so).
    """
    if pretrained:
        config = with_backbone_source(config)
    model_cfg, text_cfg = config["model"], config["text"]
    method = model_cfg["method"]
    backbone_kwargs = dict(model_cfg["backbone_kwargs"])
    backbone_kwargs["pretrained"] = (
        resolve_path(backbone_kwargs.get("pretrained")) if pretrained else None
    )
    if backbone_kwargs["pretrained"] is True:
        announce(
            f"backbone {model_cfg['backbone']}: timm's pretrained weights "
            "(downloaded from the Hugging Face hub unless cached)"
        )
    head_kwargs = dict(model_cfg["head_kwargs"])
    learnable_context = method == "denseclip" and text_cfg["learnable_context"]
    needs_text = method_uses_text(method) and text_embeddings is None
    spec = text_spec(config, class_names) if needs_text or learnable_context else None
    if needs_text:
        text_embeddings = embed_classes(config, spec, class_names)
    if learnable_context:
        try:
            head_kwargs["prompt_encoder"] = create_prompt_encoder(
                spec,
                class_names,
                n_ctx=text_cfg["learnable_context"],
                aliases=text_cfg["aliases"] or None,
            )
        except ClipfuseError as error:
            announce(f"DenseCLIP's learnable context tokens are off: {error}")
    model = create_model(
        method=method,
        backbone=model_cfg["backbone"],
        num_classes=len(class_names),
        text_embeddings=text_embeddings,
        decoder=model_cfg["decoder"],
        backbone_kwargs=backbone_kwargs,
        head_kwargs=head_kwargs,
        decoder_kwargs=model_cfg["decoder_kwargs"],
        text_classifier=model_cfg["text_classifier"],
    )
    if method == "denseclip" and pretrained:
        backbone = model_cfg["backbone"]
        if not model.head.pool_from_clip:
            announce(f"DenseCLIP's attention pool is randomly initialised ({backbone} has none)")
        elif backbone_kwargs["pretrained"]:
            announce(f"DenseCLIP's attention pool starts from {backbone}'s pretrained CLIP pool")
        else:
            announce(
                f"DenseCLIP's attention pool starts from {backbone}'s CLIP pool, which has "
                "random weights (model.backbone_kwargs.pretrained is off)"
            )
    model.config, model.class_names = copy.deepcopy(config), list(class_names)
    return model


def cost_model(config: dict, class_names: list[str]) -> Segmentor:
    """The model of ``config`` with random weights, for ``clipfuse flops`` and ``bench``.

    Where the text encoder cannot run here, random class embeddings stand in, announced
    (:func:`~clipfuse.text.resolve.cost_embeddings`): the cost does not depend on their values.
    """
    text = None
    if method_uses_text(config["model"]["method"]):
        config = resolve_text_encoder(config, class_names)
        text = cost_embeddings(config, class_names)
    return create_model_from_config(config, class_names, text_embeddings=text, pretrained=False)


@dataclass
class LoadedModel:
    """What :func:`load_model` read: the network with its weights (in ``eval()`` mode), the
    config it was trained with, its class names and, for a pretrained folder, its
    ``config.json`` (None for a training checkpoint)."""

    segmentor: Segmentor
    config: dict
    class_names: list[str]
    pretrained_meta: dict | None
    source: Path


def load_model(
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    trained: bool = False,
    revision: str | None = None,
) -> LoadedModel:
    """The trained model saved at ``path``: a pretrained folder (or its ``config.json`` /
    ``model.safetensors``), a training checkpoint (``.ckpt``) or a Hugging Face Hub id
    (``owner/name`` that is no local path; at ``revision``; :func:`clipfuse.hub.download`
    into the hub cache). ``overrides``
    (``section.key=value``) apply to its config before the model is built. ``trained``: a
    checkpoint's trained weights instead of their average (``train.ema_decay``;
    :func:`~clipfuse.saved_model.unpack_checkpoint`); a pretrained folder holds only one set.

    Raises a one-line :class:`~clipfuse.errors.ClipfuseError` for a missing path, an unknown
    format version, a missing file, weights that do not fit the config, or a foreign file.
    """
    from clipfuse.hub import download, is_repo_id

    if is_repo_id(path):
        path = download(str(path), revision)
    elif revision is not None:
        raise ClipfuseError(f"model {path}: revision= is for a Hub id (owner/name), not a path")
    path = Path(path).expanduser()
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.exists():
        raise ClipfuseError(
            f"model {path} not found: expected a folder from save_pretrained, a .ckpt or a "
            "Hugging Face Hub id (owner/name)"
        )
    meta = None
    if path.is_dir() and trained:
        raise ClipfuseError(
            f"model {path} is a pretrained folder, which holds one set of weights: the trained "
            "weights beside an average are in the training checkpoint (.ckpt)"
        )
    if path.is_dir():
        meta, state = read_pretrained(path)
        config, class_names = meta["config"], list(meta["class_names"])
        normalization = meta.get("normalization") or {}
        if "mean" in normalization and "std" in normalization:
            backbone_kwargs = dict(config["model"].get("backbone_kwargs") or {})
            backbone_kwargs.update(mean=normalization["mean"], std=normalization["std"])
            config = {**config, "model": {**config["model"], "backbone_kwargs": backbone_kwargs}}
        fits = f"{path / WEIGHTS_FILE} does not fit {path / CONFIG_FILE}"
    else:
        config, class_names, state = load_checkpoint(path, trained)
        fits = f"checkpoint {path} does not fit its config"
    config = apply_overrides(config, overrides)
    try:
        segmentor = create_model_from_config(
            config, class_names, text_embeddings=state.get("head.text_embeddings"), pretrained=False
        )
    except ClipfuseError as error:
        raise ClipfuseError(f"model {path}: {one_line(error)}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise ClipfuseError(
            f"model {path}: its config is incomplete or invalid ({error!r})"
        ) from error
    load_weights(segmentor, state, fits)
    return LoadedModel(segmentor.eval(), config, class_names, meta, path)


def class_axes(model: Segmentor, config: dict, class_names: list[str]) -> ClassAxes:
    """The tensors of ``model`` (``config``, ``class_names``) whose shape follows the number of
    classes K, found by building the same model with one class more (random weights): the
    dim that grows, and where its K classes start (0 for a classifier, after the head's image
    channels for a layer that reads ``concat[I', S]``). Tensors the probe lacks (DenseCLIP's
    learnable context, which it leaves out) do not follow K."""
    probe_config = {**config, "text": {**config["text"], "learnable_context": 0}}
    text = None
    if model.head is not None:
        text = torch.ones(len(class_names) + 1, model.head.text_embeddings.shape[1])
    names = [*class_names, "one class more"]
    probe = create_model_from_config(probe_config, names, text, pretrained=False).state_dict()
    classes, image_channels = len(class_names), getattr(model.head, "visual_channels", None)
    axes = {}
    for name, tensor in model.state_dict().items():
        if name not in probe:
            continue
        shapes = zip(tensor.shape, probe[name].shape, strict=True)
        grown = [d for d, (size, probed) in enumerate(shapes) if size != probed]
        if not grown:
            continue
        dim = grown[0]
        start = 0 if tensor.shape[dim] == classes else image_channels
        if len(grown) > 1 or start is None or tensor.shape[dim] < start + classes:
            raise ClipfuseError(
                f"tensor {name} of shape {tuple(tensor.shape)} follows the number of classes in "
                "a way train.init_from does not know (expected K classes, or the K score "
                "channels after the head's image channels)"
            )
        axes[name] = (dim, start)
    return axes


def initialise_from(model: Segmentor, config: dict, class_names: list[str]) -> None:
    """Load ``train.init_from`` (a trained model, its average of weights where it kept one)
    into ``model``, class by class (:func:`~clipfuse.models.class_transfer.transfer_state`):
    a class named as a source class (or one of its text aliases), or paired with one in
    ``train.init_classes`` (``SOURCE=CLASS``), starts from it; the others keep their fresh
    initialisation (a pair overrides a match by name). The text embeddings are those of
    ``class_names``, or with ``train.init_text: source`` the source's for the classes that
    start from a source class. Announced on stderr."""
    train = config["train"]
    where = f"train.init_from {resolve_path(train['init_from'])}"
    try:
        source = load_model(resolve_path(train["init_from"]))
    except ClipfuseError as error:
        raise ClipfuseError(f"{where}: {one_line(error)}") from error
    aliases = source.config["text"].get("aliases") or None
    by_name = parse_class_map(None, source.class_names, class_names, aliases)
    paired = {}
    if train["init_classes"]:
        paired = parse_class_map(
            train["init_classes"],
            source.class_names,
            class_names,
            aliases,
            "train.init_classes",
            ("source class", "class"),
        )
    source_classes: list[int | None] = [None] * len(class_names)
    targets = list(paired.values())
    twice = {class_names[k] for k in targets if targets.count(k) > 1}
    if twice:
        raise ClipfuseError(f"train.init_classes: class {sorted(twice)[0]!r} is paired twice")
    for source_class, k in [*by_name.items(), *paired.items()]:
        source_classes[k] = source_class  # a pair overrides a match by name
    axes = class_axes(model, config, class_names)
    fresh = model.state_dict()
    own = set()  # buffers that follow K: the class names' text embeddings
    if train["init_text"] == "names":
        own = {name for name, _ in model.named_buffers() if name in axes}
    kept = {name: tensor for name, tensor in fresh.items() if name not in own}
    theirs = {n: t for n, t in source.segmentor.state_dict().items() if n not in own}
    state = transfer_state(kept, theirs, axes, source_classes, where)
    model.load_state_dict({**state, **{name: fresh[name] for name in own}})
    started = [
        f"{name}<-{source.class_names[j]}"
        for name, j in zip(class_names, source_classes, strict=True)
        if j is not None
    ]
    new = [name for name, j in zip(class_names, source_classes, strict=True) if j is None]
    text = "the class names'" if train["init_text"] == "names" else "the source's where started"
    announce(
        f"{where}: weights loaded; classes from its classes: {', '.join(started) or 'none'}; "
        f"new classes (fresh): {', '.join(new) or 'none'}; text vectors: {text}"
    )
