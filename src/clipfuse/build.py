"""From a run config or a saved model to a :class:`~clipfuse.models.Segmentor`: the one way
the engine, the command line, the benchmark, export and inference build a model.

* :func:`build_model`: run config -> class names' text embeddings -> ``Segmentor``;
* :func:`load_model`: a training checkpoint or a pretrained folder -> the ``Segmentor`` with
  its weights, strict-checked (:func:`clipfuse.saved_model.load_weights`);
* :func:`cost_model`: the model with random weights, for counting and timing.

Lightning-free.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from clipfuse.backbones import clip_model_of
from clipfuse.config import apply_overrides, resolve_path, resolve_spec
from clipfuse.data import dataset_classes
from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.models import Segmentor, create_model, method_uses_text
from clipfuse.paths import shared_root
from clipfuse.saved_model import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_weights,
    read_pretrained,
)
from clipfuse.seeding import with_resolved_draws
from clipfuse.text import build_prompt_encoder, derangement, embed_class_names
from clipfuse.text.aliases import apply_aliases
from clipfuse.text.bank import find_bank, resolve_bank_path
from clipfuse.text.open_clip_encoder import OpenClipEncoder
from clipfuse.text.registry import split_spec

# ``text.encoder: auto`` on a backbone that is no CLIP image tower: the paper's text.
DEFAULT_TEXT = "bank:shared:text/clip-vitb16"


def class_names_of(config: dict) -> list[str]:
    """The class names of the dataset of ``config``."""
    data = config["data"]
    return dataset_classes(data["dataset"], root=data["root"], **data["dataset_kwargs"])


def _same_clip_model(a: str, b: str) -> bool:
    """``RN50/openai`` vs ``RN50/openai``; an ``<arch>`` without a tag (a local checkpoint)
    matches any tag of that architecture."""
    if "/" in a and "/" in b:
        return a == b
    return a.partition("/")[0] == b.partition("/")[0]


def resolve_text_encoder(config: dict, class_names: list[str]) -> dict:
    """``config`` with ``text.encoder: auto`` made concrete, the text of the image side.

    A CLIP backbone (:func:`~clipfuse.backbones.clip_model_of`, e.g. ``resnet50_clip.openai``:
    ``RN50/openai``) gets its own CLIP model's text, as the paper's Table 2 and DenseCLIP pair
    them: the first bank under ``shared:text`` of that model holding every class, else
    ``open_clip:<model>`` (announced: it downloads the weights unless cached). Any other
    backbone gets :data:`DEFAULT_TEXT`. An explicit encoder of another CLIP model than the
    backbone's is refused unless ``text.allow_mismatch`` is true.
    """
    text_cfg = config["text"]
    backbone = config["model"]["backbone"]
    clip_model = clip_model_of(backbone)
    spec = text_cfg["encoder"]
    if spec == "auto":
        names = apply_aliases(class_names, text_cfg["aliases"] or None)
        bank = find_bank(clip_model, names, shared_root() / "text") if clip_model else None
        if bank is not None:
            spec = f"bank:shared:text/{bank.name}"
        elif clip_model is not None:
            spec = f"open_clip:{clip_model}"
            announce(
                f"no text bank of CLIP {clip_model} under {shared_root() / 'text'} holds all "
                f"{len(class_names)} classes: embedding them with {spec} (downloads its weights "
                "unless open_clip's cache has them)"
            )
        else:
            spec = DEFAULT_TEXT
        return {**config, "text": {**text_cfg, "encoder": spec}}
    if clip_model is not None and not text_cfg.get("allow_mismatch", False):
        encoder_class, argument = split_spec(resolve_spec(spec))
        try:
            others = [
                m
                for m in encoder_class.clip_models(argument)
                if not _same_clip_model(m, clip_model)
            ]
        except ClipfuseError:  # an absent bank: text_spec reports it (or falls back)
            others = []
        if others:
            raise ClipfuseError(
                f"text encoder {spec} is CLIP {others[0]}'s but the backbone {backbone} is "
                f"CLIP {clip_model}'s image tower, so image and text features would not be "
                "aligned: use text.encoder=auto, or text.allow_mismatch=true to pair them anyway"
            )
    return config


def text_spec(config: dict, class_names: list[str]) -> str:
    """The text encoder of ``config``: :func:`resolve_text_encoder`, then its fallback where
    it is absent (:func:`_available_spec`)."""
    return _available_spec(resolve_text_encoder(config, class_names)["text"])


def _available_spec(text_cfg: dict) -> str:
    """The encoder of a text section whose encoder is resolved; ``text.fallback``
    (announced) when its ``bank:`` is absent."""
    spec = resolve_spec(text_cfg["encoder"])
    fallback = text_cfg["fallback"]
    if fallback and spec.startswith("bank:"):
        try:
            resolve_bank_path(spec.removeprefix("bank:"))
        except ClipfuseError:
            announce(
                f"text bank {spec} not found: computing the vocabulary with {fallback} instead"
            )
            return fallback
    return spec


def _embed_class_names(config: dict, spec: str, class_names: list[str]) -> torch.Tensor:
    """K x Ct embeddings of ``class_names`` by the encoder ``spec``, with the config's template
    and aliases (cached on disk by :func:`clipfuse.text.embed_class_names`); with
    ``text.shuffle`` each class gets another class's vector (:func:`derangement`)."""
    text_cfg = with_resolved_draws(config)["text"]
    embeddings = embed_class_names(
        spec, class_names, template=text_cfg["template"], aliases=text_cfg["aliases"] or None
    )
    if text_cfg["shuffle"] is False:
        return embeddings
    return embeddings[derangement(len(class_names), text_cfg["shuffle"])]


def build_model(
    config: dict,
    class_names: list[str],
    text_embeddings: torch.Tensor | None = None,
    pretrained: bool = True,
) -> Segmentor:
    """The model of ``config``; text embeddings are computed (cached) unless given.

    With ``pretrained`` the one-line notes say where the backbone's weights come from (a
    download unless cached) and how DenseCLIP's attention pool starts.
    """
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
        text_embeddings = _embed_class_names(config, spec, class_names)
    if learnable_context:
        try:
            head_kwargs["prompt_encoder"] = build_prompt_encoder(
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
    return model


def cost_model(config: dict, class_names: list[str]) -> Segmentor:
    """The model of ``config`` with random weights, for ``clipfuse flops`` and ``bench``.

    Where the text encoder cannot run here (open_clip weights not downloaded, a bank absent),
    random class embeddings stand in, announced: the cost does not depend on their values.
    Their width is the open_clip architecture's, else 512 (CLIP ViT-B/16's).
    """
    text = None
    if method_uses_text(config["model"]["method"]):
        config = resolve_text_encoder(config, class_names)
        try:
            text = _embed_class_names(config, _available_spec(config["text"]), class_names)
        except ClipfuseError as error:
            encoder_class, argument = split_spec(resolve_spec(config["text"]["encoder"]))
            width = OpenClipEncoder.width(argument) if encoder_class is OpenClipEncoder else 512
            announce(f"{error}; random text embeddings of width {width} stand in")
            text = torch.randn(len(class_names), width, generator=torch.Generator().manual_seed(0))
    return build_model(config, class_names, text_embeddings=text, pretrained=False)


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


def load_model(path: str | os.PathLike, overrides: Sequence[str] = ()) -> LoadedModel:
    """The trained model saved at ``path``: a pretrained folder (or its ``config.json`` /
    ``model.safetensors``) or a training checkpoint (``.ckpt``). ``overrides``
    (``section.key=value``) apply to its config before the model is built.

    Raises a one-line :class:`~clipfuse.errors.ClipfuseError` for a missing path, an unknown
    format version, a missing file, weights that do not fit the config, or a foreign file.
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.exists():
        raise ClipfuseError(
            f"model {path} not found: expected a folder from save_pretrained or a .ckpt"
        )
    meta = None
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
        config, class_names, state = load_checkpoint(path)
        fits = f"checkpoint {path} does not fit its config"
    config = apply_overrides(config, overrides)
    try:
        segmentor = build_model(
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
