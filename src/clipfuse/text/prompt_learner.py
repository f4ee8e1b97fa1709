"""DenseCLIP's learnable context tokens in front of the class name (docs/research/method.md Sec. 4).

The prompt "X X X X X X X X {name}." is tokenised once; at every forward the embeddings of
the n_ctx "X" tokens after the start token are replaced by learnable context vectors (shared
by all classes, as in CoOp and DenseCLIP) and the prompts run through the frozen CLIP text
tower. Gradients reach the context vectors only. This needs a real CLIP text encoder
(``open_clip:`` or ``hf:``); precomputed (``bank:``) and ``random:`` embeddings are fixed.
"""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.text.aliases import apply_aliases
from clipfuse.text.base import normalize_name, validate_class_names
from clipfuse.text.hf_encoder import HFEncoder, load_hf_text
from clipfuse.text.open_clip_encoder import (
    OpenClipEncoder,
    load_open_clip_text,
    parse_open_clip_argument,
)
from clipfuse.text.registry import split_spec

PLACEHOLDER = "X"


def _is_open_clip(model: nn.Module) -> bool:
    """open_clip models have ``encode_text``; Hugging Face CLIP text models do not."""
    return hasattr(model, "encode_text")


def _open_clip_tower(model: nn.Module) -> nn.Module:
    """The module holding the token embedding: the model (CLIP) or ``model.text``."""
    tower = getattr(model, "text", model)
    if not isinstance(getattr(tower, "token_embedding", None), nn.Embedding):
        raise ClipfuseError(
            f"learnable context tokens: the open_clip text tower {type(tower).__name__} has no "
            "token embedding to place them in (use a CLIP-style text transformer)"
        )
    return tower


def _open_clip_dim(tower: nn.Module) -> int:
    projection = tower.text_projection
    if projection is None:
        return tower.token_embedding.embedding_dim
    return projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]


class ContextPromptEncoder(nn.Module):
    """K x dim embeddings of "[ctx_1 .. ctx_n] {name}." through a frozen CLIP text tower.

    ``text_model`` is an open_clip model (anything with ``encode_text``) or a Hugging Face
    ``CLIPTextModelWithProjection``; ``token_ids`` (K x L) tokenise "X X ... X {name}." with
    the n_ctx "X" tokens at positions 1..n_ctx. The tower stays in eval mode with
    ``requires_grad=False``; the output is L2-normalised like :meth:`TextEncoder.encode`.
    The tower's weights are part of ``state_dict`` (``tower.*``).
    """

    def __init__(
        self,
        text_model: nn.Module,
        token_ids: torch.Tensor,
        n_ctx: int = 8,
        attention_mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if _is_open_clip(text_model):
            tower = _open_clip_tower(text_model)
            width = tower.token_embedding.embedding_dim
            self.dim = int(_open_clip_dim(tower))
        else:
            width = text_model.get_input_embeddings().embedding_dim
            self.dim = int(text_model.config.projection_dim)
        self.n_ctx = n_ctx
        self.tower = text_model.eval().requires_grad_(False)
        self.context = nn.Parameter(torch.empty(n_ctx, width).normal_(std=0.02))
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.register_buffer("attention_mask", attention_mask, persistent=False)

    def _token_embedding(self) -> nn.Module:
        if _is_open_clip(self.tower):
            return _open_clip_tower(self.tower).token_embedding
        return self.tower.get_input_embeddings()

    def _insert_context(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        """Forward hook on the token embedding: positions 1..n_ctx become the context."""
        context = self.context.to(output.dtype).unsqueeze(0).expand(output.shape[0], -1, -1)
        return torch.cat([output[:, :1], context, output[:, 1 + self.n_ctx :]], dim=1)

    def train(self, mode: bool = True) -> "ContextPromptEncoder":
        """Switch mode while keeping the frozen tower in eval mode."""
        super().train(mode)
        self.tower.eval()
        return self

    def forward(self) -> torch.Tensor:
        """The K x dim L2-normalised class embeddings with the current context vectors."""
        handle = self._token_embedding().register_forward_hook(self._insert_context)
        try:
            if _is_open_clip(self.tower):
                embeddings = self.tower.encode_text(self.token_ids)
            else:
                output = self.tower(input_ids=self.token_ids, attention_mask=self.attention_mask)
                embeddings = output.text_embeds
        finally:
            handle.remove()
        return F.normalize(embeddings.float(), dim=-1)


def _check_placeholders(token_ids: torch.Tensor, n_ctx: int, spec: str) -> None:
    placeholders = token_ids[:, 1 : 1 + n_ctx]
    if placeholders.shape[1] != n_ctx or not bool((placeholders == placeholders[0, 0]).all()):
        raise ClipfuseError(
            f"learnable context tokens: the tokenizer of {spec!r} does not give one token per "
            f"{PLACEHOLDER!r} right after the start token; cannot place {n_ctx} context vectors"
        )


def create_prompt_encoder(
    spec: str,
    class_names: Sequence[str],
    n_ctx: int = 8,
    aliases: Mapping[str, str] | None = None,
) -> ContextPromptEncoder:
    """A :class:`ContextPromptEncoder` for an ``open_clip:`` or ``hf:`` spec.

    Other specs raise :class:`ClipfuseError`: their embeddings are fixed, and callers turn
    the message into a one-line notice that learnable context is off.
    """
    encoder_class, argument = split_spec(spec)
    if n_ctx < 1:
        raise ClipfuseError(f"learnable context tokens: n_ctx must be at least 1, got {n_ctx}")
    names = apply_aliases(validate_class_names(class_names), aliases)
    prefix = " ".join([PLACEHOLDER] * n_ctx)
    prompts = [f"{prefix} {normalize_name(name)}." for name in names]
    if encoder_class is OpenClipEncoder:
        model, tokenizer, _ = load_open_clip_text(*parse_open_clip_argument(argument))
        token_ids, attention_mask = tokenizer(prompts), None
    elif encoder_class is HFEncoder:
        model, tokenizer = load_hf_text(argument)
        batch = tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=model.config.max_position_embeddings,
            return_tensors="pt",
        )
        token_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    else:
        kind = spec.partition(":")[0]
        raise ClipfuseError(
            "learnable context tokens need a CLIP text encoder (open_clip:... or hf:...); "
            f"{kind}:... gives fixed embeddings"
        )
    _check_placeholders(token_ids, n_ctx, spec)
    return ContextPromptEncoder(model, token_ids, n_ctx, attention_mask)
