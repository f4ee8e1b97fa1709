"""``hf:<model-id-or-local-dir>``: a frozen Hugging Face CLIP text tower (docs/research/method.md
Sec. 1).

Loads ``CLIPTextModelWithProjection`` (its ``text_embeds`` output) and the tokenizer saved
with it. A model id (``openai/clip-vit-base-patch16``) downloads into the Hugging Face cache
where a network exists; a local folder needs ``config.json``, the weights and the tokenizer
files. transformers is imported only when a model loads.
"""

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.extras import require
from clipfuse.text.base import TextEncoder, normalize_name
from clipfuse.text.prompts import embed_prompts

if TYPE_CHECKING:
    from transformers import CLIPTextModelWithProjection, PreTrainedTokenizerBase


def load_hf_text(source: str) -> tuple["CLIPTextModelWithProjection", "PreTrainedTokenizerBase"]:
    """The text model in float32, eval mode, every parameter frozen, and its tokenizer."""
    require("transformers", f"text encoder 'hf:{source}'")
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    if not source:
        raise ClipfuseError(
            "text encoder 'hf:': expected hf:<model-id-or-local-dir>, "
            "e.g. hf:openai/clip-vit-base-patch16"
        )
    if source.startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir():
        raise ClipfuseError(f"text encoder 'hf:{source}': folder not found")
    try:
        model = CLIPTextModelWithProjection.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ClipfuseError(
            f"text encoder 'hf:{source}': could not load a CLIP text model and tokenizer "
            f"(a model id needs a network or a filled cache): {one_line(error)}"
        ) from error
    model.eval().requires_grad_(False)
    return model, tokenizer


class HFEncoder(TextEncoder):
    """Embeds prompts with the ``text_embeds`` of a frozen ``CLIPTextModelWithProjection``;
    the output is L2-normalised (averaged over templates when several are given)."""

    def __init__(self, source: str) -> None:
        self.spec = f"hf:{source}"
        self.model, self.tokenizer = load_hf_text(source)
        self.dim = int(self.model.config.projection_dim)

    @classmethod
    def from_spec(cls, argument: str) -> "HFEncoder":
        return cls(argument)

    @classmethod
    def source_files(cls, argument: str) -> list[Path]:
        """The files of a local model folder; a hub id depends on no local file."""
        folder = Path(argument).expanduser()
        return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def _encode_texts(self, prompts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.model.config.max_position_embeddings,
            return_tensors="pt",
        )
        output = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return output.text_embeds

    def _encode(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        names = [normalize_name(name) for name in class_names]
        return embed_prompts(self._encode_texts, names, templates)
