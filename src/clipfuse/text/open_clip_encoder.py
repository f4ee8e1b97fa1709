"""``open_clip:<arch>/<pretrained>``: a frozen open_clip text tower (method.md section 1).

``<pretrained>`` is an open_clip tag (``openai``, ``laion2b_s34b_b88k``, ...; downloaded into
open_clip's cache where a network exists) or a local checkpoint path (``.pt``, ``.bin``,
``.safetensors``). Example: ``open_clip:ViT-B-16/openai``. Tags trained with QuickGELU (the
OpenAI weights) get QuickGELU automatically. open_clip is imported only when a model loads.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.text.base import TextEncoder, normalize_name
from clipfuse.text.prompts import embed_prompts

Tokenizer = Callable[[list[str]], torch.Tensor]


def parse_open_clip_argument(argument: str) -> tuple[str, str]:
    """Split ``<arch>/<pretrained>`` at the first ``/`` (a path may follow)."""
    arch, _, pretrained = argument.partition("/")
    if not arch or not pretrained:
        raise ClipfuseError(
            f"text encoder 'open_clip:{argument}': expected open_clip:<arch>/<pretrained>, "
            "e.g. open_clip:ViT-B-16/openai or open_clip:ViT-B-16//path/to/checkpoint.pt"
        )
    return arch, pretrained


def load_open_clip_text(arch: str, pretrained: str) -> tuple[nn.Module, Tokenizer, int]:
    """The open_clip model with its image tower removed, in eval mode with every parameter
    frozen; its tokenizer (list of strings -> N x context_length token ids); the output
    dimension of ``encode_text``."""
    import open_clip

    config = open_clip.get_model_config(arch)
    if config is None:
        raise ClipfuseError(
            f"text encoder 'open_clip:{arch}/{pretrained}': unknown architecture {arch!r} "
            "(see open_clip.list_models())"
        )
    if Path(pretrained).expanduser().is_file():
        pretrained = str(Path(pretrained).expanduser())
    quick_gelu = bool(open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", False))
    try:
        model = open_clip.create_model(
            arch, pretrained=pretrained, device="cpu", force_quick_gelu=quick_gelu
        )
    except (RuntimeError, OSError) as error:
        raise ClipfuseError(
            f"text encoder 'open_clip:{arch}/{pretrained}': could not load weights "
            "(an open_clip tag needs a network or a filled cache; a path must exist): "
            f"{one_line(error)}"
        ) from error
    model.visual = None
    model.eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(arch), int(config["embed_dim"])


class OpenClipEncoder(TextEncoder):
    """Embeds prompts with ``model.encode_text`` of a frozen open_clip model; the output is
    L2-normalised (averaged over templates when several are given)."""

    def __init__(self, arch: str, pretrained: str) -> None:
        self.spec = f"open_clip:{arch}/{pretrained}"
        self.model, self.tokenizer, self.dim = load_open_clip_text(arch, pretrained)

    @classmethod
    def from_spec(cls, argument: str) -> "OpenClipEncoder":
        return cls(*parse_open_clip_argument(argument))

    @classmethod
    def source_files(cls, argument: str) -> list[Path]:
        """The checkpoint when ``<pretrained>`` is a local file; a tag depends on no local file."""
        _, pretrained = parse_open_clip_argument(argument)
        path = Path(pretrained).expanduser()
        return [path] if path.is_file() else []

    @classmethod
    def clip_models(cls, argument: str) -> set[str]:
        """``{"<arch>/<tag>"}`` for an open_clip tag, ``{"<arch>"}`` for a checkpoint path."""
        import open_clip

        arch, pretrained = parse_open_clip_argument(argument)
        tags = open_clip.list_pretrained_tags_by_model(arch)
        return {f"{arch}/{pretrained}" if pretrained in tags else arch}

    @classmethod
    def width(cls, argument: str) -> int:
        """The embedding width of the architecture (no weights needed)."""
        import open_clip

        arch, _ = parse_open_clip_argument(argument)
        config = open_clip.get_model_config(arch)
        if config is None:
            raise ClipfuseError(
                f"text encoder 'open_clip:{argument}': unknown architecture {arch!r}"
            )
        return int(config["embed_dim"])

    def _encode_texts(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(prompts))

    def _encode(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        names = [normalize_name(name) for name in class_names]
        return embed_prompts(self._encode_texts, names, templates)
