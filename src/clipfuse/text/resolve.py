"""Which text encoder a run config's class names are embedded with (docs/research/method.md Sec. 1).

:func:`resolve_text_encoder` makes ``text.encoder: auto`` concrete (a CLIP backbone's own CLIP
text, else :data:`DEFAULT_TEXT`), puts the fallback of an absent bank in its place
(:func:`absent_bank_fallback`) and refuses text of another CLIP model than the backbone's;
:func:`embed_classes` embeds the class names with the config's template, aliases and shuffle;
:func:`cost_embeddings` lets random vectors stand in where the encoder cannot run.
:mod:`clipfuse.build` assembles the model from them.
"""

import torch

from clipfuse.backbones import clip_model_of
from clipfuse.config import resolve_spec
from clipfuse.errors import ClipfuseError, announce
from clipfuse.paths import shared_root
from clipfuse.seeding import with_resolved_draws
from clipfuse.sources import public_text_encoder
from clipfuse.text.aliases import apply_aliases
from clipfuse.text.bank import find_bank, resolve_bank_path
from clipfuse.text.cache import embed_class_names
from clipfuse.text.open_clip_encoder import OpenClipEncoder
from clipfuse.text.registry import split_spec
from clipfuse.text.shuffle import derangement

# ``text.encoder: auto`` on a backbone that is no CLIP image tower: the paper's text.
DEFAULT_TEXT = "bank:shared:text/clip-vitb16"


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
    backbone gets :data:`DEFAULT_TEXT`. A ``bank:`` absent here is replaced by its fallback
    (:func:`absent_bank_fallback`), so a run's ``config.yaml`` names the encoder it used. An
    encoder of another CLIP model than the backbone's is refused unless
    ``text.allow_mismatch`` is true.
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
        text_cfg = {**text_cfg, "encoder": spec}
    spec = absent_bank_fallback(text_cfg) or spec
    config = {**config, "text": {**text_cfg, "encoder": spec}}
    if clip_model is not None and not text_cfg.get("allow_mismatch", False):
        encoder_class, argument = split_spec(resolve_spec(spec))
        try:
            others = [
                m
                for m in encoder_class.clip_models(argument)
                if not _same_clip_model(m, clip_model)
            ]
        except ClipfuseError:  # an absent bank without a fallback: reading it reports it
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
    it is absent (:func:`available_spec`)."""
    return available_spec(resolve_text_encoder(config, class_names)["text"])


def available_spec(text_cfg: dict) -> str:
    """The encoder of a text section whose encoder is resolved (``shared:`` expanded), or
    its fallback where its ``bank:`` is absent (:func:`absent_bank_fallback`)."""
    return absent_bank_fallback(text_cfg) or resolve_spec(text_cfg["encoder"])


def absent_bank_fallback(text_cfg: dict) -> str | None:
    """None unless ``text.encoder`` is a ``bank:`` that is absent here; then (announced)
    ``text.fallback``, else for a shared bank the open_clip encoder of the CLIP model that
    made it (:func:`clipfuse.sources.public_text_encoder`: downloaded once, then cached),
    else None (the bank's own error follows when it is read)."""
    spec = resolve_spec(text_cfg["encoder"])
    if not spec.startswith("bank:"):
        return None
    try:
        resolve_bank_path(spec.removeprefix("bank:"))
        return None
    except ClipfuseError:
        fallback = text_cfg["fallback"] or public_text_encoder(text_cfg["encoder"])
    if fallback:
        announce(
            f"text bank {spec} not found: embedding the class names with {fallback} instead "
            "(downloads its weights unless cached)"
        )
    return fallback


def embed_classes(config: dict, spec: str, class_names: list[str]) -> torch.Tensor:
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


def cost_embeddings(config: dict, class_names: list[str]) -> torch.Tensor:
    """K x Ct embeddings of ``class_names`` for a resolved ``config``, or, where its encoder
    cannot run here (open_clip weights not downloaded, a bank absent), random ones (announced)
    of the open_clip architecture's width, else 512 (CLIP ViT-B/16's)."""
    try:
        return embed_classes(config, available_spec(config["text"]), class_names)
    except ClipfuseError as error:
        encoder_class, argument = split_spec(resolve_spec(config["text"]["encoder"]))
        width = OpenClipEncoder.width(argument) if encoder_class is OpenClipEncoder else 512
        announce(f"{error}; random text embeddings of width {width} stand in")
        return torch.randn(len(class_names), width, generator=torch.Generator().manual_seed(0))
