"""The segmentation network: backbone -> (language head) -> decoder (docs/research/method.md Sec.
1)."""

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class Segmentor(nn.Module):
    """Backbone features ``[c2, c3, c4, c5]``; a language head, when present, replaces ``c5``
    by ``X = concat[I', S]`` (Conv-Former) or ``concat[c5, S]`` (DenseCLIP); the decoder
    predicts logits, upsampled to the input size.

    ``forward`` returns ``{"logits": B x K x H x W}`` plus ``"score_map"`` (B x K x h x w,
    cosine, stride 32) for language-guided methods. With a ``text_classifier``
    (:class:`~clipfuse.models.text_classifier.TextClassifier`) the decoder gives pixel
    embeddings and the logits are their similarity with the head's ``text_embeddings``, or with
    the K' x Ct ``class_embeddings`` passed to ``forward`` (then K' logits). Plain tensors in and out: no Lightning,
    no files, so the engine, export and the web demo can all wrap it.

    A model built from a run config (:func:`clipfuse.build.create_model_from_config`, so every
    model of :func:`clipfuse.create_model`, of training and of :func:`clipfuse.load`) carries
    ``config`` (that full, validated run config) and ``class_names`` (its K classes, in logit
    order): what saving it needs. Both are None for a model assembled by hand.
    """

    config: dict | None
    class_names: list[str] | None

    def __init__(
        self,
        backbone: nn.Module,
        decoder: nn.Module,
        num_classes: int,
        head: nn.Module | None = None,
        text_classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        self.head = head
        self.decoder = decoder
        self.text_classifier = text_classifier
        self.config = None
        self.class_names = None

    def forward(
        self, images: torch.Tensor, class_embeddings: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        outputs: dict[str, torch.Tensor] = {}
        if self.head is not None:
            features[-1], outputs["score_map"] = self.head(features[-1])
        logits = self.decoder(features)
        if self.text_classifier is not None:
            text = self.head.text_embeddings if class_embeddings is None else class_embeddings
            logits = self.text_classifier(logits, text)
        outputs["logits"] = F.interpolate(
            logits, size=images.shape[-2:], mode="bilinear", align_corners=False
        )
        return outputs

    def save_pretrained(self, directory: str | os.PathLike, **options) -> Path:
        """Save as a pretrained folder (``model.safetensors``, ``config.json``, a model card
        ``README.md``) that :func:`clipfuse.load` reads, and with ``push_to_hub=True,
        repo_id="owner/name"`` push it to the Hugging Face Hub; the options and the returned
        folder are those of :meth:`clipfuse.inference.ClipfuseModel.save_pretrained`. Needs
        ``config`` and ``class_names`` (a model built from a config has them); the model is
        left as it is. The writing lives in :mod:`clipfuse.inference` (imported here only
        when called: the network itself does no file I/O)."""
        from clipfuse.inference.pretrained import save_segmentor

        return save_segmentor(self, directory, **options)
