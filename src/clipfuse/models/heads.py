"""The language-head base: a head takes c5 and the frozen class-name embeddings and returns the
map that replaces c5 in the decoder plus the cosine score map (docs/research/method.md Sec. 1 and
4).
The heads: :class:`~clipfuse.models.convformer.ConvFormerHead` and
:class:`~clipfuse.models.denseclip.DenseCLIPHead`.

Contract: ``out_channels: int`` and ``forward(c5) -> (x, score_map)``;
the text embeddings are a non-trainable buffer ``text_embeddings`` (K x Ct). The factory
builds a head with :meth:`LanguageHead.from_backbone`, so a head that starts from more of the
backbone than its c5 width (DenseCLIP's attention pool) takes it there itself.
"""

import torch
from torch import nn

from clipfuse.errors import ClipfuseError


def _checked_text(text_embeddings: torch.Tensor | None, width: int | None = None) -> torch.Tensor:
    """A detached float copy of K x Ct class embeddings, or a :class:`ClipfuseError`."""
    if text_embeddings is None or text_embeddings.dim() != 2 or text_embeddings.shape[0] < 1:
        shape = None if text_embeddings is None else tuple(text_embeddings.shape)
        raise ClipfuseError(
            f"language head: text embeddings must be a K x Ct tensor with K >= 1, got {shape}"
        )
    if width is not None and text_embeddings.shape[1] != width:
        raise ClipfuseError(
            f"language head: text embeddings of width {text_embeddings.shape[1]} given, "
            f"the head was built for width {width}"
        )
    return text_embeddings.detach().float().clone()


class LanguageHead(nn.Module):
    """Holds the class embeddings as the non-trainable buffer ``text_embeddings`` (K x Ct).

    ``out_channels`` is ``visual_channels + K`` (the score map is concatenated to a
    ``visual_channels``-wide map) and follows K when :meth:`set_text_embeddings` changes it.
    """

    text_embeddings: torch.Tensor

    def __init__(self, text_embeddings: torch.Tensor | None, visual_channels: int) -> None:
        super().__init__()
        self.register_buffer("text_embeddings", _checked_text(text_embeddings))
        self.visual_channels = visual_channels

    @classmethod
    def from_backbone(
        cls, backbone: nn.Module, text_embeddings: torch.Tensor | None, **options
    ) -> "LanguageHead":
        """The head on ``backbone``'s c5 (``backbone.channels[-1]`` channels) with the
        keyword arguments ``options`` (a config's ``model.head_kwargs``)."""
        return cls(backbone.channels[-1], text_embeddings, **options)

    @property
    def num_classes(self) -> int:
        """K, the number of class embeddings."""
        return self.text_embeddings.shape[0]

    @property
    def out_channels(self) -> int:
        """Channels of ``x``: the visual map's plus one score channel per class."""
        return self.visual_channels + self.num_classes

    def set_text_embeddings(self, text_embeddings: torch.Tensor) -> None:
        """Replace the class embeddings by K' x Ct ones (K' may differ: open vocabulary).

        The text projection, if any, still applies; Ct must stay the same. With a new K'
        the score map and ``x`` get K' channels, so a decoder built for K channels no longer
        accepts ``x``.
        """
        text = _checked_text(text_embeddings, self.text_embeddings.shape[1])
        self.text_embeddings = text.to(self.text_embeddings.device)
