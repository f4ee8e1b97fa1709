"""DenseCLIP (docs/research/method.md Sec. 4, baseline ``denseclip``; the paper's Tables 1 and 2).

Written after DenseCLIP's public code (Rao et al., ``segmentation/denseclip``): CLIP's
``AttentionPool2d`` maps c5 to the text width, giving a global vector g and a dense map z.
On a CLIP ResNet (Table 2) the pool starts from the backbone's pretrained one, its positional
embedding interpolated to the feature grid, as DenseCLIP's ``CLIPResNetWithAttention`` does;
on any other backbone (Table 1, and ViT-B, Swin-T) it is randomly initialised. Then the
post-model ``ContextDecoder`` (text queries cross-attend to [g; z]) updates the text,
``t = t + gamma * decoder(t, [g; z])``; ``S = cos(z, t)`` is concatenated to the raw c5.

DenseCLIP's 8 learnable context tokens need a CLIP text encoder running every step: pass it
as ``prompt_encoder`` (a module whose ``forward()`` returns the K x Ct embeddings, e.g.
:class:`clipfuse.text.prompt_learner.ContextPromptEncoder`). Without one the head uses the
fixed ``text_embeddings`` buffer and learnable context is off.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.models.attention import init_weights, merge_heads, split_heads
from clipfuse.models.heads import LanguageHead
from clipfuse.models.registry import register_model, register_paper_rows
from clipfuse.models.score_map import cosine_score_map


def default_pool_heads(channels: int) -> int:
    """CLIP's rule (head width 64), lowered to the nearest divisor of ``channels``."""
    heads = max(1, channels // 64)
    while channels % heads:
        heads -= 1
    return heads


class AttentionPool2d(nn.Module):
    """CLIP's attention pool: the mean token and the h*w pixel tokens, plus a learned
    positional embedding, go through one multi-head self-attention; output projection to
    ``output_dim``. Returns the global vector (mean token) and the dense map (pixel tokens).

    The positional embedding is learned for ``spatial_size`` x ``spatial_size`` tokens (16:
    a 512 input at stride 32) and bilinearly interpolated to the feature size, so any input
    size works. Initialised as CLIP (weights normal, std ``channels ** -0.5``), biases zero.
    """

    def __init__(
        self, channels: int, num_heads: int, output_dim: int, spatial_size: int = 16
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ClipfuseError(
                f"attention pool: {channels} channels are not divisible by {num_heads} heads"
            )
        self.num_heads = num_heads
        self.spatial_size = spatial_size
        self.positional_embedding = nn.Parameter(
            torch.randn(spatial_size**2 + 1, channels) / channels**0.5
        )
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.c_proj = nn.Linear(channels, output_dim)
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(linear.weight, std=channels**-0.5)
            nn.init.zeros_(linear.bias)

    def copy_clip_pool(self, state: Mapping[str, torch.Tensor]) -> None:
        """Start from a CLIP attention pool in timm's layout (``pos_embed``, ``q``, ``k``,
        ``v``, ``proj``: :attr:`clipfuse.backbones.TimmBackbone.attention_pool`). Its square
        positional grid (7 x 7 for a 224 input) is bilinearly resized to ``spatial_size``."""
        positions = state["pos_embed"]
        old, channels = round((positions.shape[0] - 1) ** 0.5), positions.shape[1]
        grid = positions[1:].reshape(1, old, old, channels).permute(0, 3, 1, 2)
        size = self.spatial_size
        grid = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
        grid = grid.reshape(channels, size * size).transpose(0, 1)
        copied = {"positional_embedding": torch.cat([positions[:1], grid], dim=0)}
        for ours, theirs in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("c_proj", "proj")):
            copied[f"{ours}.weight"] = state[f"{theirs}.weight"]
            copied[f"{ours}.bias"] = state[f"{theirs}.bias"]
        mismatched = [k for k, v in self.state_dict().items() if v.shape != copied[k].shape]
        if mismatched:
            raise ClipfuseError(
                f"DenseCLIP head: the backbone's CLIP attention pool does not fit ({mismatched[0]} "
                f"{tuple(copied[mismatched[0]].shape)} vs {tuple(self.state_dict()[mismatched[0]].shape)}); "
                "leave model.head_kwargs.embed_dim unset to use CLIP's width"
            )
        self.load_state_dict(copied)

    def _positions(self, height: int, width: int) -> torch.Tensor:
        """(1 + h*w) x C: the global token's embedding, then the interpolated grid."""
        size, channels = self.spatial_size, self.positional_embedding.shape[1]
        grid = self.positional_embedding[1:].reshape(1, size, size, channels).permute(0, 3, 1, 2)
        if (height, width) != (size, size):
            grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        grid = grid.reshape(channels, height * width).transpose(0, 1)
        return torch.cat([self.positional_embedding[:1], grid], dim=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` B x C x h x w -> global B x D and dense B x D x h x w (D = output_dim)."""
        batch, _, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self._positions(height, width)
        query, key, value = (
            split_heads(proj(tokens), self.num_heads)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = self.c_proj(merge_heads(F.scaled_dot_product_attention(query, key, value)))
        dense = out[:, 1:].transpose(1, 2).reshape(batch, -1, height, width)
        return out[:, 0], dense


class Attention(nn.Module):
    """DenseCLIP's decoder attention: q/k/v projections without bias, output projection with
    bias, dropout on the output."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ClipfuseError(f"context decoder: width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``query`` B x N x C attends to ``memory`` B x M x C -> B x N x C."""
        q = split_heads(self.q_proj(query), self.heads)
        k = split_heads(self.k_proj(memory), self.heads)
        v = split_heads(self.v_proj(memory), self.heads)
        out = merge_heads(F.scaled_dot_product_attention(q, k, v))
        return self.proj_drop(self.proj(out))


class TransformerDecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention, cross-attention to the memory, MLP (x4, GELU)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + self.self_attn(normed, normed)
        x = x + self.cross_attn(self.norm2(x), memory)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """DenseCLIP's post-model prompting: text (B x K x D) and visual context (B x M x D) are
    projected to ``width``, ``layers`` decoder layers let the text attend to the context, and
    the result is projected back to D. Linear trunc-normal(0.02), zero bias; LN 1/0.
    """

    def __init__(
        self,
        visual_dim: int,
        width: int = 256,
        heads: int = 4,
        layers: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width), nn.LayerNorm(width)
        )
        self.text_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width))
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(width, heads, dropout) for _ in range(layers)
        )
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, visual_dim))
        self.apply(init_weights)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """``text`` B x K x D, ``visual`` B x M x D -> the text update B x K x D."""
        memory = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.layers:
            x = layer(x, memory)
        return self.out_proj(x)


class DenseCLIPHead(LanguageHead):
    """The ``denseclip`` baseline as a language head (docs/research/method.md Sec. 4).

    ``g, z = AttentionPool2d(c5)`` (``embed_dim``, default Ct); ``t`` = the class embeddings
    (or ``prompt_encoder()``), through a Linear to ``embed_dim`` only when Ct != embed_dim;
    ``t = t + gamma * ContextDecoder(t, [g; z])`` with a learnable ``gamma`` (``embed_dim``,
    initialised to ``gamma_init``); ``S = cos(z, t)``; ``x = concat[c5, S]`` (raw c5 kept,
    ``in_channels + K`` channels). ``pool_heads`` defaults to CLIP's head width 64 (see
    :func:`default_pool_heads`); ``pool_size`` is the grid the positional embedding is
    learned for.

    ``clip_pool``: a CLIP ResNet's attention-pool weights (timm layout) to start the pool
    from (``embed_dim`` then defaults to CLIP's embedding width, the pool's output);
    ``pool_from_clip`` records whether it did.
    """

    def __init__(
        self,
        in_channels: int,
        text_embeddings: torch.Tensor | None,
        embed_dim: int | None = None,
        context_width: int = 256,
        context_heads: int = 4,
        context_layers: int = 3,
        gamma_init: float = 1e-4,
        prompt_encoder: nn.Module | None = None,
        pool_heads: int | None = None,
        pool_size: int = 16,
        context_dropout: float = 0.1,
        clip_pool: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__(text_embeddings, visual_channels=in_channels)
        text_width = self.text_embeddings.shape[1]
        clip_width = clip_pool["proj.weight"].shape[0] if clip_pool is not None else None
        embed_dim = embed_dim or clip_width or text_width
        self.pool = AttentionPool2d(
            in_channels, pool_heads or default_pool_heads(in_channels), embed_dim, pool_size
        )
        self.pool_from_clip = clip_pool is not None
        if clip_pool is not None:
            if pool_heads not in (None, in_channels // 64):
                raise ClipfuseError(
                    f"DenseCLIP head: CLIP's attention pool has {in_channels // 64} heads, "
                    f"pool_heads={pool_heads} given"
                )
            self.pool.copy_clip_pool(clip_pool)
        self.text_proj = (
            nn.Linear(text_width, embed_dim) if text_width != embed_dim else nn.Identity()
        )
        self.text_proj.apply(init_weights)
        self.context_decoder = ContextDecoder(
            embed_dim, context_width, context_heads, context_layers, context_dropout
        )
        self.gamma = nn.Parameter(torch.full((embed_dim,), gamma_init))
        self.prompt_encoder = prompt_encoder

    @classmethod
    def from_backbone(
        cls, backbone: nn.Module, text_embeddings: torch.Tensor | None, **options
    ) -> "DenseCLIPHead":
        """As :meth:`LanguageHead.from_backbone`; on a CLIP ResNet the pool starts from the
        backbone's own (Table 2): the head takes ``backbone.attention_pool`` as ``clip_pool``
        (unless ``options`` give one) and the backbone forgets it, so it is not kept twice."""
        clip_pool = getattr(backbone, "attention_pool", None)
        if clip_pool is not None:
            backbone.attention_pool = None
        return cls(backbone.channels[-1], text_embeddings, **{"clip_pool": clip_pool, **options})

    def set_text_embeddings(self, text_embeddings: torch.Tensor) -> None:
        """As :meth:`LanguageHead.set_text_embeddings`; refused with a prompt encoder, whose
        output replaces the buffer at every forward."""
        if self.prompt_encoder is not None:
            raise ClipfuseError(
                "DenseCLIP head: the text comes from the learnable prompt encoder; "
                "fixed text embeddings cannot replace it"
            )
        super().set_text_embeddings(text_embeddings)

    def forward(self, c5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``c5`` B x Cin x h x w -> ``(x, S)``: B x (Cin + K) x h x w and B x K x h x w."""
        global_feature, dense = self.pool(c5)
        text = self.text_embeddings if self.prompt_encoder is None else self.prompt_encoder()
        text = self.text_proj(text).unsqueeze(0).expand(c5.shape[0], -1, -1)
        context = torch.cat([global_feature.unsqueeze(1), dense.flatten(2).transpose(1, 2)], 1)
        text = text + self.gamma * self.context_decoder(text, context)
        score_map = cosine_score_map(dense, text)
        return torch.cat([c5, score_map], dim=1), score_map


register_model("denseclip_mobilenetv2", "denseclip_mobilenetv2_camvid_192x256_140")
register_paper_rows("denseclip")
