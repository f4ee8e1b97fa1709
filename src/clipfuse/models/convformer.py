"""The Conv-Former of Jin & Yang, "CLIP for Lightweight Semantic Segmentation"
(docs/research/method.md
Sec. 1, 2 and 4; the paper, Eqs. 1-4): its blocks, the fusion module and the language
head :class:`ConvFormerHead` of the ``convformer`` method.

A Conv-Former block runs, in Mobile-Former order,

1. :class:`Conv2Former`  image -> text: T = LN(T + MHSA(T Wq, x, x) Wo), x the block input
   image down-sampled by a stride-3 conv (paper Eq. 3);
2. :class:`Former`       post-LN transformer block over the K text tokens;
3. :class:`Conv`         MobileNetV2 inverted bottleneck on the block input image;
4. :class:`Former2Conv`  text -> image: I = I_conv + softmax(p (T Wk)^T) (T Wv), every pixel p a
   query without projection and no output projection (paper Eq. 4).

:class:`ConvFormer` stacks N blocks and adds the outer residual of Eq. 1;
:class:`ConvFormerHead` projects c5 and the class embeddings into it and returns
``concat[I', cos(I', T')]`` (Eq. 2).

Layouts: images are B x C x h x w, text tokens B x K x C (no positional encoding: the classes
are a set, so every block is equivariant to a permutation of the K tokens).

Ablation ``bridge="dot"`` (docs/research/method.md Sec. 4) replaces both bridges by a
parameter-free inner
product that keeps the topology: Conv2Former ``T = LN(T + cos(T, x) / M @ x)`` and Former2Conv
``I = I_conv + cos(p, T) / K @ T`` (no softmax, no projections).

Ablation ``downsample="depthwise"``: the dense 3x3 stride-3 conv (9 C^2 weights, 2.4 M at
C = 512) becomes a depthwise 3x3 stride-3 conv (9 C weights) followed by the same BN; no
pointwise conv follows, so the image tokens stay channel-wise unmixed (the queries' Wq and the
output projection Wo still mix channels).

Initialisation [choice, docs/research/method.md Sec. 2]: Linear trunc-normal(0.02) with zero bias,
LayerNorm/BatchNorm weight 1 and bias 0, convs Kaiming-normal (fan_out).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.models.attention import init_weights, merge_heads, split_heads
from clipfuse.models.heads import LanguageHead
from clipfuse.models.registry import register_model, register_paper_rows
from clipfuse.models.score_map import cosine_score_map

Bridge = Literal["attn", "dot"]
Downsample = Literal["dense", "depthwise"]
BRIDGES = ("attn", "dot")
DOWNSAMPLES = ("dense", "depthwise")


def _dot_bridge(queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Parameter-free bridge of the ``dot`` ablation: ``cos(queries, tokens) / N @ tokens``.

    ``queries`` B x Q x C, ``tokens`` B x N x C -> B x Q x C (no softmax; the 1/N keeps the
    sum an average).
    """
    cosine = F.normalize(queries, dim=-1) @ F.normalize(tokens, dim=-1).transpose(1, 2)
    return (cosine / tokens.shape[1]) @ tokens


def _check_width(dim: int, heads: int) -> None:
    if dim < 1 or heads < 1 or dim % heads:
        raise ClipfuseError(
            f"Conv-Former width dim={dim} must be a positive multiple of heads={heads}"
        )


class Conv2Former(nn.Module):
    """Image -> text bridge (docs/research/method.md Sec. 2 step 1, paper Eq. 3).

    The image is padded right/bottom to a multiple of 3 [choice], down-sampled by a 3x3
    stride-3 conv without bias + BN to M tokens x, and the text attends to them:
    ``T = LN(T + MHSA(T Wq, x, x) Wo)`` with softmax over the M tokens and no projection on the
    image side. ``bridge="dot"`` drops Wq/Wo and the softmax (see the module docstring).
    """

    def __init__(
        self, dim: int, heads: int = 8, bridge: Bridge = "attn", downsample: Downsample = "dense"
    ) -> None:
        super().__init__()
        _check_width(dim, heads)
        self.heads = heads
        self.bridge = bridge
        groups = dim if downsample == "depthwise" else 1
        self.down = nn.Conv2d(dim, dim, 3, stride=3, groups=groups, bias=False)
        self.down_norm = nn.BatchNorm2d(dim)
        if bridge == "attn":
            self.q_proj = nn.Linear(dim, dim)
            self.out_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``image`` B x C x h x w, ``text`` B x K x C -> updated text B x K x C."""
        height, width = image.shape[-2:]
        image = F.pad(image, (0, -width % 3, 0, -height % 3))
        # B x M x C with C contiguous (a small copy): strided keys/values would send SDPA to
        # its unfused "math" fallback (8 kernels instead of 1).
        tokens = self.down_norm(self.down(image)).flatten(2).transpose(1, 2).contiguous()
        if self.bridge == "dot":
            return self.norm(text + _dot_bridge(text, tokens))
        query = split_heads(self.q_proj(text), self.heads)
        key_value = split_heads(tokens, self.heads)
        update = F.scaled_dot_product_attention(query, key_value, key_value)
        return self.norm(text + self.out_proj(merge_heads(update)))


class Former(nn.Module):
    """Transformer block over the K text tokens (docs/research/method.md Sec. 2 step 2).

    Post-LayerNorm: ``x = LN(x + MHSA(x))``, ``x = LN(x + FFN(x))``; FFN expansion
    ``ffn_ratio`` (2, not 4) with GELU; no positional encoding.
    """

    def __init__(self, dim: int, heads: int = 8, ffn_ratio: int = 2) -> None:
        super().__init__()
        _check_width(dim, heads)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_ratio * dim), nn.GELU(), nn.Linear(ffn_ratio * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """``text`` B x K x C -> B x K x C."""
        query, key, value = (split_heads(t, self.heads) for t in self.qkv(text).chunk(3, -1))
        attended = merge_heads(F.scaled_dot_product_attention(query, key, value))
        text = self.norm1(text + self.out_proj(attended))
        return self.norm2(text + self.ffn(text))


class Conv(nn.Module):
    """MobileNetV2 inverted bottleneck with identity (docs/research/method.md Sec. 2 step 3).

    1x1 C -> rC, BN, ReLU6; depthwise 3x3, BN, ReLU6; 1x1 rC -> C, BN; plus the input.
    """

    def __init__(self, dim: int, expand_ratio: int = 6) -> None:
        super().__init__()
        hidden = expand_ratio * dim
        self.block = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` B x C x h x w -> B x C x h x w."""
        return image + self.block(image)


class Former2Conv(nn.Module):
    """Text -> image bridge (docs/research/method.md Sec. 2 step 4, paper Eq. 4).

    Every pixel p of the Conv output is a query without projection; keys T Wk, values T Wv,
    softmax over the K tokens, heads concatenated, no output projection:
    ``I = I_conv + A`` reshaped to C x h x w. Wk has no bias: a key bias adds the same
    ``p . b`` to every logit of a query, which the softmax cancels. ``bridge="dot"`` drops
    Wk/Wv and the softmax (see the module docstring).
    """

    def __init__(self, dim: int, heads: int = 8, bridge: Bridge = "attn") -> None:
        super().__init__()
        _check_width(dim, heads)
        self.heads = heads
        self.bridge = bridge
        if bridge == "attn":
            self.k_proj = nn.Linear(dim, dim, bias=False)
            self.v_proj = nn.Linear(dim, dim)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``image`` B x C x h x w (the Conv output), ``text`` B x K x C -> B x C x h x w."""
        height, width = image.shape[-2:]
        # B x hw x C with C contiguous (a small copy): strided queries would send SDPA to its
        # unfused "math" fallback (8 kernels instead of 1).
        pixels = image.flatten(2).transpose(1, 2).contiguous()
        if self.bridge == "dot":
            update = _dot_bridge(pixels, text)
        else:
            query = split_heads(pixels, self.heads)
            key = split_heads(self.k_proj(text), self.heads)
            value = split_heads(self.v_proj(text), self.heads)
            update = merge_heads(F.scaled_dot_product_attention(query, key, value))
        # B x hw x C viewed as B x C x h x w (no copy; the sum below is laid out as ``image``)
        update = update.transpose(1, 2).unflatten(2, (height, width))
        return image + update


class ConvFormerBlock(nn.Module):
    """One Conv-Former block (docs/research/method.md Sec. 2): Conv2Former on the block *input*
    image,
    Former, Conv on the block input image, Former2Conv from the updated text to the Conv
    output. Returns ``(image, text)``; the outer residual of Eq. 1 is in :class:`ConvFormer`.
    """

    def __init__(
        self,
        dim: int = 512,
        heads: int = 8,
        bridge: Bridge = "attn",
        downsample: Downsample = "dense",
        ffn_ratio: int = 2,
        expand_ratio: int = 6,
    ) -> None:
        super().__init__()
        if bridge not in BRIDGES:
            raise ClipfuseError(f"Conv-Former bridge {bridge!r}: expected one of {BRIDGES}")
        if downsample not in DOWNSAMPLES:
            raise ClipfuseError(
                f"Conv-Former downsample {downsample!r}: expected one of {DOWNSAMPLES}"
            )
        self.conv2former = Conv2Former(dim, heads, bridge, downsample)
        self.former = Former(dim, heads, ffn_ratio)
        self.conv = Conv(dim, expand_ratio)
        self.former2conv = Former2Conv(dim, heads, bridge)
        self.apply(init_weights)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` B x C x h x w, ``text`` B x K x C -> same shapes."""
        text = self.former(self.conv2former(image, text))
        return self.former2conv(self.conv(image), text), text


class ConvFormer(nn.Module):
    """The fusion module of Eq. 1: ``[I', T'] = blocks([I0, T0]) + [I0, T0]``.

    ``num_blocks`` stacked :class:`ConvFormerBlock` (N = 6 is the paper's best) of width
    ``dim`` (512 [choice], 256 the small setting) with ``heads`` heads [choice: 8].

    ``gate_init`` [deviation, not in the paper; None = the paper, the default of this module;
    :class:`ConvFormerHead` defaults to 1e-4]: a learnable per-channel
    scale on each branch, ``[I', T'] = [g_I * blocks(I0), g_T * blocks(T0)] + [I0, T0]``, both
    initialised to ``gate_init`` (LayerScale, Touvron et al. 2021; DenseCLIP gates its text
    update the same way with 1e-4). With a small value the model starts as Semantic FPN on
    ``[I0, S]``: the freshly initialised blocks do not replace the backbone's features with
    noise at step 0, and enter as they learn.
    """

    def __init__(
        self,
        dim: int = 512,
        num_blocks: int = 6,
        heads: int = 8,
        bridge: Bridge = "attn",
        downsample: Downsample = "dense",
        ffn_ratio: int = 2,
        expand_ratio: int = 6,
        gate_init: float | None = None,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ClipfuseError(f"Conv-Former num_blocks must be at least 1, got {num_blocks}")
        self.dim = dim
        self.blocks = nn.ModuleList(
            ConvFormerBlock(dim, heads, bridge, downsample, ffn_ratio, expand_ratio)
            for _ in range(num_blocks)
        )
        self.image_gate = self.text_gate = None
        if gate_init is not None:
            self.image_gate = nn.Parameter(torch.full((dim,), float(gate_init)))
            self.text_gate = nn.Parameter(torch.full((dim,), float(gate_init)))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` B x C x h x w, ``text`` B x K x C or K x C (shared by the batch) ->
        ``(I', T')`` with shapes B x C x h x w and B x K x C, outer residual included."""
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(image.shape[0], -1, -1)
        fused_image, fused_text = image, text
        for block in self.blocks:
            fused_image, fused_text = block(fused_image, fused_text)
        if self.image_gate is not None:
            fused_image = self.image_gate.view(-1, 1, 1) * fused_image
            fused_text = self.text_gate * fused_text
        return fused_image + image, fused_text + text


class ConvFormerHead(LanguageHead):
    """The paper's head (docs/research/method.md Sec. 1, Eqs. 1-2).

    ``c5 --1x1 conv + BN--> I0`` (``dim`` channels); ``T0 = text_embeddings`` through a Linear
    to ``dim`` only when Ct != dim; ``[I', T'] = ConvFormer([I0, T0]) + [I0, T0]``;
    ``S = cos(I', T')``; ``x = concat[I', S]`` (``dim + K`` channels).

    ``text_scale`` [choice, not in the paper]: ``"rms"`` (default) rescales ``T0`` to a root
    mean square of 1 per channel, the scale of the BatchNorm-ed image tokens and of the
    LayerNorm outputs it is added to. CLIP embeddings are unit-norm (RMS ``1/sqrt(C)``); at that
    scale (``"none"``, the paper read literally) the first Conv2Former's attention output swamps
    them and the K text tokens collapse into one: on CamVid after 140 steps their pairwise
    cosine was 0.9996 and the auxiliary loss stayed at ln K (docs/research/results.md).

    ``gate_init`` [choice, not in the paper]: LayerScale gates on the fusion's contributions
    (:class:`ConvFormer`), 1e-4 by default, ``None`` for the paper read literally (their
    measured effect on CamVid: docs/research/results.md).
    """

    def __init__(
        self,
        in_channels: int,
        text_embeddings: torch.Tensor | None,
        dim: int = 512,
        num_blocks: int = 6,
        heads: int = 8,
        bridge: Bridge = "attn",
        downsample: Downsample = "dense",
        ffn_ratio: int = 2,
        expand_ratio: int = 6,
        text_scale: Literal["rms", "none"] = "rms",
        gate_init: float | None = 1e-4,
    ) -> None:
        super().__init__(text_embeddings, visual_channels=dim)
        if text_scale not in ("rms", "none"):
            raise ClipfuseError(
                f"ConvFormerHead: text_scale must be 'rms' or 'none', got {text_scale!r}"
            )
        self.text_scale = text_scale
        text_width = self.text_embeddings.shape[1]
        self.image_proj = nn.Sequential(
            nn.Conv2d(in_channels, dim, 1, bias=False), nn.BatchNorm2d(dim)
        )
        self.text_proj = nn.Linear(text_width, dim) if text_width != dim else nn.Identity()
        self.image_proj.apply(init_weights)
        self.text_proj.apply(init_weights)
        self.fusion = ConvFormer(
            dim, num_blocks, heads, bridge, downsample, ffn_ratio, expand_ratio, gate_init
        )

    def text_tokens(self) -> torch.Tensor:
        """``T0``: the class embeddings projected to ``dim`` and scaled (K x dim)."""
        text = self.text_proj(self.text_embeddings)
        if self.text_scale == "rms":
            text = text * torch.rsqrt(text.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        return text

    def forward(self, c5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``c5`` B x Cin x h x w -> ``(x, S)``: B x (dim + K) x h x w and B x K x h x w."""
        image, text = self.fusion(self.image_proj(c5), self.text_tokens())
        score_map = cosine_score_map(image, text)
        return torch.cat([image, score_map], dim=1), score_map


register_model("convformer_mobilenetv2", "convformer_mobilenetv2_camvid_256x320_2200")
register_model("convformer_lite_mobilenetv2", "convformer-lite_mobilenetv2_camvid_192x256_160")
register_paper_rows("convformer")
