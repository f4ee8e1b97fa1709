"""The public way to build a model, as timm's and smp's: :func:`create_model` from a
registered variant's name (:mod:`clipfuse.models.registry`) or a run config, through the
one path every model of clipfuse takes (:func:`clipfuse.build.create_model_from_config`).
Exported as ``clipfuse.create_model`` and ``clipfuse.list_models``."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from clipfuse.errors import ClipfuseError
from clipfuse.models.registry import list_models, variant_config
from clipfuse.models.segmentor import Segmentor

__all__ = ["create_model", "list_models"]


def _overridden(config: dict, text: str | torch.Tensor | None, overrides: dict) -> dict:
    """``config`` with ``overrides`` of its ``model`` section (a mapping such as
    ``decoder_kwargs`` updated key by key) and the text encoder ``text`` (a spec),
    validated by the config schema."""
    from clipfuse.config import with_defaults

    model = dict(config.get("model") or {})
    for key, value in overrides.items():
        current = model.get(key)
        both = isinstance(current, dict) and isinstance(value, Mapping)
        model[key] = {**current, **value} if both else value
    config = {**config, "model": model}
    if isinstance(text, str):
        config["text"] = {**(config.get("text") or {}), "encoder": text}
    return with_defaults(config)


def _class_names(
    config: dict, class_names: Sequence[str] | None, num_classes: int | None, rows: int | None
) -> list[str]:
    """The K class names: ``class_names``; else ``class_0`` ... for ``num_classes`` (or the
    rows of given text embeddings); else the classes of the config's dataset."""
    from clipfuse.build import class_names_of

    if isinstance(class_names, str):
        raise ClipfuseError(f"class_names {class_names!r}: expected a list of class names")
    if class_names is None:
        count = num_classes or rows
        names = [f"class_{k}" for k in range(count)] if count else class_names_of(config)
    else:
        names = [str(name) for name in class_names]
    for what, count in (("num_classes", num_classes), ("text embeddings' rows", rows)):
        if count is not None and count != len(names):
            raise ClipfuseError(f"{what} is {count} but {len(names)} class names are given")
    if not names:
        raise ClipfuseError("class_names is empty: expected at least one class")
    return names


def create_model(
    name_or_config: str | Mapping,
    class_names: Sequence[str] | None = None,
    *,
    text: str | torch.Tensor | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    **kwargs: Any,
) -> Segmentor:
    """A segmentation model (a plain ``nn.Module``, in training mode) for your classes.

    Args:
        name_or_config: a registered variant (:func:`list_models`, e.g. ``"plain_mobilenetv2"``,
            ``"convformer_mobilenetv2"``: the ``model`` and ``text`` sections of the shipped
            config it names) or a run-config mapping (completed with the defaults).
        class_names: your K classes, in label order (label k is ``class_names[k]``); language
            -guided variants (``convformer_*``, ``denseclip_*``) embed them. Default:
            ``class_0`` ... for ``num_classes``, else the config's dataset's classes.
        text: how class names are embedded: a text-encoder spec (``open_clip:ViT-B-16/openai``,
            downloaded once; ``bank:<file.npy>``; ``random:64`` for tests) or a K x D tensor of
            your own; default the config's ``text.encoder``.
        pretrained: start the backbone from its pretrained weights (the config's
            ``model.backbone_kwargs.pretrained``); else random weights.
        num_classes: K, when no names are given (plain variants).
        **kwargs: keys of the config's ``model`` section overriding the variant's, e.g.
            ``decoder_kwargs={"channels": 64}`` (merged key by key) or ``backbone="resnet50"``;
            checked by the config schema (a misspelt key is a one-line :class:`ClipfuseError`).

    ``model(images)`` takes B x 3 x H x W floats in 0-255 pixel units (the backbone
    normalises them) and returns ``{"logits": B x K x H x W}`` at the input size, plus
    ``"score_map"`` (B x K x H/32 x W/32 cosine similarities of pixels and class
    embeddings) for language-guided variants. The method's loss (cross-entropy, plus the
    score map's auxiliary term where there is one; label 255 ignored) is
    ``clipfuse.losses.segmentation_loss(outputs, masks)["loss"]``, masks B x H x W int64.
    ``model.config`` and ``model.class_names`` hold what it was built from.
    """
    from clipfuse.build import create_model_from_config
    from clipfuse.config import with_defaults

    if isinstance(name_or_config, str):
        config = variant_config(name_or_config)
    elif isinstance(name_or_config, Mapping):
        config = with_defaults(dict(name_or_config))
    else:
        raise ClipfuseError(
            f"create_model: got a {type(name_or_config).__name__}: expected a model name "
            "(clipfuse.list_models()) or a run-config mapping"
        )
    embeddings = text if isinstance(text, torch.Tensor) else None
    if text is not None and embeddings is None and not isinstance(text, str):
        raise ClipfuseError(
            f"text: got a {type(text).__name__}: expected a text-encoder spec or a K x D tensor"
        )
    config = _overridden(config, text, kwargs)
    rows = None if embeddings is None else embeddings.shape[0]
    names = _class_names(config, class_names, num_classes, rows)
    return create_model_from_config(config, names, embeddings, pretrained=pretrained)
