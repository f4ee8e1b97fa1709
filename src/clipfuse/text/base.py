"""The text-encoder interface: class names in, one embedding per class out (docs/research/method.md
Sec. 1).

The paper's pipeline turns each class name into a prompt ("a photo of a {name}."), runs a frozen
CLIP text encoder and keeps the K x Ct result, T0, as a constant. Every way of producing T0
(``open_clip:``, ``hf:``, ``bank:``, ``random:``) implements :class:`TextEncoder`.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch

from clipfuse.errors import ClipfuseError
from clipfuse.text.prompts import DEFAULT_TEMPLATE, template_list

_SEPARATORS = re.compile(r"[\s_\-]+")


def normalize_name(name: str) -> str:
    """Lowercase, strip, and collapse runs of spaces, underscores and hyphens to one space."""
    return _SEPARATORS.sub(" ", name.strip().lower()).strip()


def validate_class_names(names: Sequence[str]) -> list[str]:
    """Return ``names`` as a list, or raise a one-line :class:`ClipfuseError`.

    Rejected: an empty list, an empty or blank name, and two names that are equal after
    :func:`normalize_name` (the message names the duplicate).
    """
    if isinstance(names, str):
        raise ClipfuseError(f"class names: expected a list of names, got the string {names!r}")
    names = list(names)
    if not names:
        raise ClipfuseError("class names: expected at least one name, got an empty list")
    seen: dict[str, str] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str) or not normalize_name(name):
            raise ClipfuseError(f"class names: name {index} is empty or blank ({name!r})")
        key = normalize_name(name)
        if key in seen:
            raise ClipfuseError(f"class names: duplicate name {key!r} ({seen[key]!r} and {name!r})")
        seen[key] = name
    return names


class TextEncoder(ABC):
    """Maps class names to a K x dim float32 embedding matrix (docs/research/method.md Sec. 1, T0).

    Subclasses are built from the part of a spec after its prefix (``from_spec``) and
    implement ``_encode``; :meth:`encode` validates the inputs and returns a CPU float32
    tensor without gradient history.
    """

    spec: str
    dim: int

    @classmethod
    @abstractmethod
    def from_spec(cls, argument: str) -> "TextEncoder":
        """Build the encoder from the spec text after ``<prefix>:``."""

    @classmethod
    def source_files(cls, argument: str) -> list[Path]:
        """Local files the embeddings depend on (their mtime and size key the cache)."""
        return []

    @classmethod
    def spec_width(cls, argument: str) -> int | None:
        """The embedding width the spec fixes, known without loading anything (a cached matrix
        of another width is computed again); None when only the loaded encoder knows it."""
        return None

    @classmethod
    def clip_models(cls, argument: str) -> set[str]:
        """The CLIP models whose text tower made the embeddings, as open_clip ``<arch>/<tag>``
        (``<arch>`` alone for a local checkpoint); empty when unknown."""
        return set()

    def encode(
        self, class_names: Sequence[str], template: str | Sequence[str] = DEFAULT_TEMPLATE
    ) -> torch.Tensor:
        """Embed ``class_names`` (K x dim, float32, CPU, no grad), one row per name in order.

        ``template`` is one prompt with a single ``{}`` for the name, or a sequence of them
        whose L2-normalised embeddings are averaged and re-normalised.
        """
        names = validate_class_names(class_names)
        templates = template_list(template)
        # On the CPU even inside a ``torch.device("meta")`` block: T0 is real data.
        with torch.no_grad(), torch.device("cpu"):
            embeddings = self._encode(names, templates)
        embeddings = embeddings.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if embeddings.shape != (len(names), self.dim):
            raise RuntimeError(
                f"{self.spec}: produced shape {tuple(embeddings.shape)}, "
                f"expected ({len(names)}, {self.dim})"
            )
        return embeddings

    @abstractmethod
    def _encode(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        """Embed validated names with validated templates (runs under ``torch.no_grad``)."""
