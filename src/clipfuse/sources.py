"""Where a config's ``shared:`` files come from on this machine: the shared folder, else the
public source of the same thing (chosen only where the local file is absent, announced in one
line).

The shipped configs name files of the shared folder (``$CLIPFUSE_SHARED`` or ``../shared``,
:mod:`clipfuse.paths`). A clone of the project without it still runs every config, given a
network:

* backbone weights ``shared:weights/...`` -> timm's own pretrained weights of the backbone
  (its default tag unless the name gives one), with what those weights need: their
  normalisation (timm's ``pretrained_cfg`` mean/std, not the shared file's 127.5) and
  ordinary trainable BatchNorm (the shared MobileNetV2 has its BatchNorm folded into the
  convolutions, hence ``frozen_bn: true``). :func:`with_backbone_source` rewrites the model
  section, so the run's ``config.yaml`` records the weights it really used;
* a text bank ``bank:shared:text/<folder>[/<file>]`` -> ``open_clip:`` of the CLIP model that
  made that folder's banks (:data:`SHARED_BANK_MODELS`, :func:`public_text_encoder`; the
  class names are embedded with ``text.template``), unless ``text.fallback`` names another;
* datasets: :func:`clipfuse.data.find_dataset_root` searches the download folder after the
  shared one, and ``clipfuse data download camvid`` fills it.

A path outside the shared folder never falls back: a wrong path the user chose is an error.
"""

from pathlib import Path, PurePosixPath

import timm

from clipfuse.backbones.timm_backbone import ALIASES
from clipfuse.config import resolve_path
from clipfuse.errors import ClipfuseError, announce

SHARED = "shared:"

SHARED_BANK_MODELS = {
    "clip-vitb16": "ViT-B-16/openai",
    "clip-vitb32": "ViT-B-32/openai",
    "clip-rn50": "RN50/openai",
}
"""Folder of ``<shared>/text`` -> the open_clip model whose text tower made its banks (each
bank's ``.json`` says "OpenAI CLIP <arch> text encoder"; ``shared/text/README.md``)."""


def public_backbone(backbone: str) -> str:
    """``<arch>.<tag>``: timm's pretrained weights of ``backbone`` (an alias such as
    ``mobilenetv2`` resolved; the tag of the name, else timm's default), or a one-line
    :class:`ClipfuseError` when timm has none."""
    name = ALIASES.get(backbone, backbone)
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # no such architecture or tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = timm.list_pretrained(name.partition(".")[0] + ".*")
        raise ClipfuseError(
            f"timm has no pretrained weights of backbone {backbone!r} to download "
            f"(expected a timm model with pretrained tags{': ' + ', '.join(tags) if tags else ''})"
        )
    return f"{name.partition('.')[0]}.{cfg.tag}" if cfg.tag else name


def with_backbone_source(config: dict) -> dict:
    """``config`` as is when ``model.backbone_kwargs.pretrained`` is no ``shared:`` path or its
    file exists; else (announced) with the backbone's timm weights instead
    (:func:`public_backbone`): ``model.backbone`` names the ``<arch>.<tag>`` used,
    ``backbone_kwargs`` get ``pretrained: true``, those weights' ``mean``/``std`` (0-255 pixel
    units) and ``frozen_bn: false``."""
    model = config["model"]
    kwargs = model["backbone_kwargs"]
    weights = kwargs.get("pretrained")
    if not (isinstance(weights, str) and weights.startswith(SHARED)):
        return config
    path = Path(str(resolve_path(weights)))
    if path.is_file():
        return config
    try:
        name = public_backbone(model["backbone"])
    except ClipfuseError as error:
        raise ClipfuseError(f"backbone weights {path} not found, and {error}") from None
    cfg = timm.models.get_pretrained_cfg(name)
    mean = [255.0 * m for m in cfg.mean]  # as TimmBackbone scales the weights' own
    std = [255.0 * s for s in cfg.std]
    announce(
        f"backbone weights {path} not found: using timm's {name} instead, with its "
        f"normalisation (mean {[round(m, 2) for m in mean]}, std {[round(s, 2) for s in std]}) "
        "and trainable BatchNorm (model.backbone_kwargs frozen_bn: false)"
    )
    kwargs = {**kwargs, "pretrained": True, "frozen_bn": False, "mean": mean, "std": std}
    return {**config, "model": {**model, "backbone": name, "backbone_kwargs": kwargs}}


def public_text_encoder(spec: str) -> str | None:
    """``open_clip:<model>`` for a ``bank:`` spec inside a shared text folder of
    :data:`SHARED_BANK_MODELS` (``bank:shared:text/clip-vitb16``, also written relative to the
    shared folder: ``bank:text/clip-vitb16/ade20k.npy``); None for any other spec."""
    prefix, _, argument = spec.partition(":")
    if prefix != "bank":
        return None
    relative = PurePosixPath(argument.removeprefix(SHARED))
    if relative.is_absolute() or len(relative.parts) < 2 or relative.parts[0] != "text":
        return None
    model = SHARED_BANK_MODELS.get(relative.parts[1])
    return f"open_clip:{model}" if model else None
