"""``create_model``: the one entry point that builds a method by name (docs/research/method.md Sec.
4)."""

import torch

from clipfuse.backbones import create_backbone
from clipfuse.decoders import create_decoder
from clipfuse.errors import ClipfuseError
from clipfuse.models.convformer import ConvFormerHead
from clipfuse.models.denseclip import DenseCLIPHead
from clipfuse.models.heads import LanguageHead
from clipfuse.models.registry import register_model, register_paper_rows
from clipfuse.models.segmentor import Segmentor
from clipfuse.models.text_classifier import TextClassifier

# method name -> (the class of its language head, built by its ``from_backbone``, or None;
# needs text embeddings). ``model.head_kwargs`` are the keyword arguments of that class.
METHODS: dict[str, tuple[type[LanguageHead] | None, bool]] = {
    "plain": (None, False),
    "denseclip": (DenseCLIPHead, True),
    "convformer": (ConvFormerHead, True),
}

# The plain baseline (Semantic FPN, or UperNet on Swin-T): the `make demo` model, its
# 128-channel twin (the best CamVid model per CPU-hour, docs/research/results.md), its
# real-time twin (separable, three levels: docs/research/speed.md) and the paper's rows.
register_model("plain_mobilenetv2", "plain_mobilenetv2_camvid_256x320_800")
register_model("plain_mobilenetv2_w128", "plain-w128_mobilenetv2_camvid_256x320_5200")
register_model("plain_mobilenetv2_realtime", "plain-realtime_mobilenetv2_camvid_256x320_5200")
register_paper_rows("plain")


def method_uses_text(method: str) -> bool:
    """Whether ``method`` needs class-name embeddings."""
    if method not in METHODS:
        raise ClipfuseError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    return METHODS[method][1]


def create_model(
    method: str = "plain",
    backbone: str = "mobilenetv2_100",
    num_classes: int | None = None,
    text_embeddings: torch.Tensor | None = None,
    decoder: str = "fpn",
    backbone_kwargs: dict | None = None,
    head_kwargs: dict | None = None,
    decoder_kwargs: dict | None = None,
    text_classifier: bool = False,
) -> Segmentor:
    """Build a segmentation model.

    Args:
        method: ``plain`` (the decoder on the backbone, no text), ``denseclip`` or
            ``convformer`` (the paper's).
        backbone: a timm model name (see :mod:`clipfuse.backbones`).
        num_classes: K; for language-guided methods it is the number of rows of
            ``text_embeddings`` and may be left out.
        text_embeddings: K x Ct class-name embeddings (frozen), for language-guided methods.
        decoder: ``fpn`` (Semantic FPN), ``upernet``, ``lraspp`` (Lite R-ASPP) or ``smp_fpn``
            (segmentation_models_pytorch's FPN decoder).
        backbone_kwargs: ``pretrained``, ``frozen_bn``, ``img_size``, ``mean``, ``std``.
        head_kwargs: options of the language head (e.g. ``num_blocks``, ``bridge``, ``dim``).
        decoder_kwargs: options of the decoder (e.g. ``channels``, ``dropout``).
        text_classifier: language-guided methods only: the decoder's last 1x1 conv projects
            to the text width and the logits are cosine similarities with the class vectors
            (:class:`~clipfuse.models.text_classifier.TextClassifier`, LSeg's classifier).
    """
    uses_text = method_uses_text(method)
    if text_classifier and not uses_text:
        raise ClipfuseError(
            f"model.text_classifier needs a language-guided method (convformer or denseclip), "
            f"got {method!r}"
        )
    if uses_text:
        if text_embeddings is None:
            raise ClipfuseError(f"method {method!r} needs text embeddings of the class names")
        if num_classes is not None and num_classes != text_embeddings.shape[0]:
            raise ClipfuseError(
                f"num_classes={num_classes} but {text_embeddings.shape[0]} class embeddings given"
            )
        num_classes = text_embeddings.shape[0]
    if num_classes is None or num_classes < 1:
        raise ClipfuseError(f"num_classes must be a positive integer, got {num_classes!r}")
    image_backbone = create_backbone(backbone, **(backbone_kwargs or {}))
    head_class, head_options = METHODS[method][0], dict(head_kwargs or {})
    if head_class is None and head_options:
        raise ClipfuseError(f"method {method!r} takes no head options, got {sorted(head_options)}")
    head = None
    if head_class is not None:
        head = head_class.from_backbone(image_backbone, text_embeddings, **head_options)
    image_backbone.attention_pool = None  # a head's from_backbone was its only reader
    in_channels = list(image_backbone.channels)
    if head is not None:
        in_channels[-1] = head.out_channels
    outputs = text_embeddings.shape[1] if text_classifier else num_classes
    seg_decoder = create_decoder(decoder, in_channels, outputs, **(decoder_kwargs or {}))
    classifier = TextClassifier() if text_classifier else None
    return Segmentor(image_backbone, seg_decoder, num_classes, head, classifier)
