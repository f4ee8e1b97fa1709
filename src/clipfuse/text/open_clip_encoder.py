"""``open_clip:<arch>/<pretrained>``: a frozen open_clip text tower (docs/research/method.md Sec.
1).

``<pretrained>`` is an open_clip tag (``openai``, ``laion2b_s34b_b88k``, ...; downloaded once
through the Hugging Face hub's cache where a network exists) or a local checkpoint path
(``.pt``, ``.bin``, ``.safetensors``). Example: ``open_clip:ViT-B-16/openai``. Tags trained
with QuickGELU (the OpenAI weights) get QuickGELU automatically. ``open_clip:hf-hub:<repo id>``
is a model published on the Hub with open_clip's ``open_clip_config.json`` and weights
(``open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K``). open_clip is imported only when
a model loads.
"""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.extras import require
from clipfuse.text.base import TextEncoder, normalize_name
from clipfuse.text.prompts import embed_prompts

Tokenizer = Callable[[list[str]], torch.Tensor]


HF_HUB = "hf-hub:"


def parse_open_clip_argument(argument: str) -> tuple[str, str]:
    """Split ``<arch>/<pretrained>`` at the first ``/`` (a path may follow); a Hub model
    ``hf-hub:<owner>/<name>`` is the whole argument with no ``<pretrained>`` (``""``)."""
    repo = argument.removeprefix(HF_HUB)
    if argument.startswith(HF_HUB) and repo.count("/") == 1 and all(repo.split("/")):
        return argument, ""
    arch, _, pretrained = argument.partition("/")
    if argument.startswith(HF_HUB) or not arch or not pretrained:
        raise ClipfuseError(
            f"text encoder 'open_clip:{argument}': expected open_clip:<arch>/<pretrained>, "
            "e.g. open_clip:ViT-B-16/openai or open_clip:ViT-B-16//path/to/checkpoint.pt, or "
            "open_clip:hf-hub:<owner>/<name>"
        )
    return arch, pretrained


def load_open_clip_text(arch: str, pretrained: str) -> tuple[nn.Module, Tokenizer, int]:
    """The open_clip model with its image tower removed, in eval mode with every parameter
    frozen; its tokenizer (list of strings -> N x context_length token ids); the output
    dimension of ``encode_text``."""
    spec = f"open_clip:{arch}/{pretrained}" if pretrained else f"open_clip:{arch}"
    open_clip = require("open_clip", f"text encoder {spec!r}")

    hub = arch.startswith(HF_HUB)  # its open_clip_config.json sets QuickGELU where needed
    if not hub and open_clip.get_model_config(arch) is None:
        raise ClipfuseError(
            f"text encoder {spec!r}: unknown architecture {arch!r} (see open_clip.list_models())"
        )
    if Path(pretrained).expanduser().is_file():
        pretrained = str(Path(pretrained).expanduser())
    quick_gelu = not hub and open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu")
    try:
        model = open_clip.create_model(
            arch,
            pretrained=pretrained or None,
            device="cpu",
            force_quick_gelu=bool(quick_gelu),
            require_pretrained=True,  # else open_clip goes on with random weights
        )
        tokenizer = open_clip.get_tokenizer(arch)
    except (RuntimeError, OSError, ValueError) as error:
        raise ClipfuseError(
            f"text encoder {spec!r}: could not load weights (an open_clip tag or hf-hub: model "
            f"needs a network or a filled cache; a path must exist): {one_line(error)}"
        ) from error
    model.visual = None
    model.eval().requires_grad_(False)
    return model, tokenizer, int(model.encode_text(tokenizer(["a"])).shape[-1])


class OpenClipEncoder(TextEncoder):
    """Embeds prompts with ``model.encode_text`` of a frozen open_clip model; the output is
    L2-normalised (averaged over templates when several are given)."""

    def __init__(self, arch: str, pretrained: str) -> None:
        self.spec = f"open_clip:{arch}/{pretrained}" if pretrained else f"open_clip:{arch}"
        self.model, self.tokenizer, self.dim = load_open_clip_text(arch, pretrained)

    @classmethod
    def from_spec(cls, argument: str) -> "OpenClipEncoder":
        return cls(*parse_open_clip_argument(argument))

    @classmethod
    def source_files(cls, argument: str) -> list[Path]:
        """The checkpoint when ``<pretrained>`` is a local file; a tag depends on no local file."""
        _, pretrained = parse_open_clip_argument(argument)
        path = Path(pretrained).expanduser()
        return [path] if pretrained and path.is_file() else []

    @classmethod
    def clip_models(cls, argument: str) -> set[str]:
        """``{"<arch>/<tag>"}`` for an open_clip tag, ``{"<arch>"}`` for a checkpoint path."""
        open_clip = require("open_clip", f"text encoder 'open_clip:{argument}'")

        arch, pretrained = parse_open_clip_argument(argument)
        tags = open_clip.list_pretrained_tags_by_model(arch)
        return {f"{arch}/{pretrained}" if pretrained in tags else arch}

    @classmethod
    def width(cls, argument: str) -> int:
        """The embedding width of the architecture (no weights needed; a Hub model's
        ``open_clip_config.json`` is read through the hub's cache)."""
        open_clip = require("open_clip", f"text encoder 'open_clip:{argument}'")

        arch, _ = parse_open_clip_argument(argument)
        config = open_clip.get_model_config(arch)
        if arch.startswith(HF_HUB):
            from huggingface_hub import hf_hub_download

            try:
                path = hf_hub_download(arch.removeprefix(HF_HUB), "open_clip_config.json")
                config = json.loads(Path(path).read_text())["model_cfg"]
            except (OSError, ValueError, KeyError) as error:
                raise ClipfuseError(
                    f"text encoder 'open_clip:{argument}': no readable open_clip_config.json "
                    f"({one_line(error)})"
                ) from error
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
