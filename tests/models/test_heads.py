"""Language heads: ConvFormerHead (models/convformer.py; paper Sec. 3, Eq. 1-4) and DenseCLIPHead
(models/denseclip.py), as docs/research/design.md describes them ("Conv-Former fusion", "DenseCLIP
baseline")."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.models.convformer import ConvFormerHead
from clipfuse.models.denseclip import DenseCLIPHead, default_pool_heads

IN_CHANNELS, TEXT_WIDTH, K = 8, 12, 4


def _convformer_head(**kwargs) -> ConvFormerHead:
    options = {"dim": 16, "num_blocks": 2, "heads": 2} | kwargs
    return ConvFormerHead(IN_CHANNELS, torch.randn(K, TEXT_WIDTH), **options)


def _denseclip_head(**kwargs) -> DenseCLIPHead:
    options = {"context_width": 16, "context_heads": 2, "pool_size": 4} | kwargs
    return DenseCLIPHead(IN_CHANNELS, torch.randn(K, TEXT_WIDTH), **options)


HEADS = {"convformer": _convformer_head, "denseclip": _denseclip_head}


def _weighted_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """Random weights: a plain sum has zero gradient through BatchNorm/LayerNorm."""
    generator = torch.Generator().manual_seed(1)
    return sum((t * torch.randn(t.shape, generator=generator)).sum() for t in tensors)


@pytest.mark.parametrize("size", [(5, 7), (16, 16)])
def test_convformer_head_shapes(size):
    torch.manual_seed(0)
    head = _convformer_head()
    x, score_map = head(torch.randn(2, IN_CHANNELS, *size))
    assert head.out_channels == 16 + K
    assert x.shape == (2, head.out_channels, *size)
    assert score_map.shape == (2, K, *size)
    torch.testing.assert_close(x[:, 16:], score_map)
    assert score_map.abs().max() <= 1 + 1e-5


@pytest.mark.parametrize("size", [(5, 7), (16, 16)])
def test_denseclip_head_shapes(size):
    torch.manual_seed(0)
    head = _denseclip_head()
    c5 = torch.randn(2, IN_CHANNELS, *size)
    x, score_map = head(c5)
    assert head.out_channels == IN_CHANNELS + K
    assert x.shape == (2, head.out_channels, *size)
    assert score_map.shape == (2, K, *size)
    torch.testing.assert_close(x[:, :IN_CHANNELS], c5)  # raw c5 is kept
    torch.testing.assert_close(x[:, IN_CHANNELS:], score_map)


def test_text_embeddings_are_a_frozen_buffer():
    text = torch.randn(K, TEXT_WIDTH)
    for head in (
        ConvFormerHead(IN_CHANNELS, text, dim=16, num_blocks=1, heads=2),
        DenseCLIPHead(IN_CHANNELS, text, context_width=16, context_heads=2),
    ):
        assert "text_embeddings" in dict(head.named_buffers())
        assert all(p is not head.text_embeddings for p in head.parameters())
        torch.testing.assert_close(head.text_embeddings, text)
        assert "text_embeddings" in head.state_dict()


def test_text_projection_only_when_widths_differ():
    assert isinstance(_convformer_head().text_proj, nn.Linear)
    same = ConvFormerHead(IN_CHANNELS, torch.randn(K, 16), dim=16, num_blocks=1, heads=2)
    assert isinstance(same.text_proj, nn.Identity)
    assert isinstance(_denseclip_head().text_proj, nn.Identity)  # embed_dim defaults to Ct
    assert isinstance(_denseclip_head(embed_dim=16).text_proj, nn.Linear)


def test_convformer_head_gradients_reach_both_branches_and_c5():
    torch.manual_seed(0)
    head = _convformer_head()
    c5 = torch.randn(2, IN_CHANNELS, 5, 7, requires_grad=True)
    _weighted_loss(*head(c5)).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    names = {name for name, _ in head.named_parameters()}
    assert any(name.startswith("text_proj") for name in names)
    assert any(".former." in name for name in names) and any(".conv." in name for name in names)
    assert c5.grad is not None and c5.grad.abs().sum() > 0


def test_denseclip_head_gradients_reach_all_parts_and_c5():
    torch.manual_seed(0)
    head = _denseclip_head(embed_dim=16, context_dropout=0.0)
    c5 = torch.randn(2, IN_CHANNELS, 5, 7, requires_grad=True)
    _weighted_loss(*head(c5)).backward()
    for name, parameter in head.named_parameters():
        if name == "pool.k_proj.bias":  # q . b is the same for every key: softmax cancels it
            continue
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert c5.grad is not None and c5.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_class_permutation_equivariance(kind):
    torch.manual_seed(0)
    head = HEADS[kind]().eval()
    if kind == "denseclip":
        nn.init.ones_(head.gamma)  # make the context decoder's update count
    permutation = torch.tensor([2, 0, 3, 1])
    c5 = torch.randn(2, IN_CHANNELS, 5, 7)
    permuted = copy.deepcopy(head)
    permuted.set_text_embeddings(head.text_embeddings[permutation])
    with torch.no_grad():
        x, score_map = head(c5)
        x_permuted, score_map_permuted = permuted(c5)
    torch.testing.assert_close(score_map_permuted, score_map[:, permutation], atol=1e-5, rtol=0)
    visual = head.out_channels - K
    torch.testing.assert_close(x_permuted[:, :visual], x[:, :visual], atol=1e-5, rtol=0)


class DummyPromptEncoder(nn.Module):
    """Learnable K x Ct embeddings, as a stand-in for the CLIP context prompt encoder."""

    def __init__(self, classes: int, width: int) -> None:
        super().__init__()
        self.context = nn.Parameter(torch.randn(classes, width))

    def forward(self) -> torch.Tensor:
        return F.normalize(self.context, dim=-1)


def test_denseclip_prompt_encoder_gets_gradients_and_replaces_the_buffer():
    torch.manual_seed(0)
    encoder = DummyPromptEncoder(K, TEXT_WIDTH)
    head = _denseclip_head(prompt_encoder=encoder)
    head(torch.randn(2, IN_CHANNELS, 4, 4))  # warm: nothing cached between calls
    _, score_map = head(torch.randn(2, IN_CHANNELS, 4, 4))
    _weighted_loss(score_map).backward()
    assert encoder.context.grad is not None and encoder.context.grad.abs().sum() > 0
    with torch.no_grad():
        before = head(torch.ones(1, IN_CHANNELS, 4, 4))[1]
        encoder.context.add_(torch.randn(K, TEXT_WIDTH))
        after = head(torch.ones(1, IN_CHANNELS, 4, 4))[1]
    assert not torch.allclose(before, after)
    with pytest.raises(ClipfuseError, match="prompt encoder"):
        head.set_text_embeddings(torch.randn(K, TEXT_WIDTH))


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_set_text_embeddings_with_a_different_k(kind):
    torch.manual_seed(0)
    head = HEADS[kind]()
    visual = head.out_channels - K
    head.set_text_embeddings(torch.randn(7, TEXT_WIDTH))
    assert head.text_embeddings.shape == (7, TEXT_WIDTH)
    assert head.out_channels == visual + 7
    x, score_map = head(torch.randn(2, IN_CHANNELS, 5, 7))
    assert score_map.shape == (2, 7, 5, 7) and x.shape[1] == head.out_channels
    with pytest.raises(ClipfuseError, match="width"):
        head.set_text_embeddings(torch.randn(7, TEXT_WIDTH + 1))


@pytest.mark.parametrize("text", [None, torch.randn(TEXT_WIDTH), torch.randn(0, TEXT_WIDTH)])
def test_heads_reject_bad_text_embeddings(text):
    with pytest.raises(ClipfuseError, match="K x Ct"):
        ConvFormerHead(IN_CHANNELS, text, dim=16, num_blocks=1, heads=2)
    with pytest.raises(ClipfuseError, match="K x Ct"):
        DenseCLIPHead(IN_CHANNELS, text)


def test_text_scale_rms_makes_the_head_independent_of_the_text_norm():
    """Unit-norm CLIP vectors and the same vectors x 30 give one output with ``rms``; the
    literal ``none`` sees the scale (at unit norm the attention output swamps the text). Without
    gates: a gated head starts as the identity, where the scale cannot show yet."""
    torch.manual_seed(0)
    text = F.normalize(torch.randn(K, 16), dim=-1)
    c5 = torch.randn(2, IN_CHANNELS, 6, 6)
    outputs = {}
    for scale in ("rms", "none"):
        for factor in (1.0, 30.0):
            torch.manual_seed(1)
            head = ConvFormerHead(
                IN_CHANNELS,
                text * factor,
                dim=16,
                num_blocks=2,
                heads=2,
                text_scale=scale,
                gate_init=None,
            ).eval()
            outputs[scale, factor] = head(c5)[1]
    torch.testing.assert_close(outputs["rms", 1.0], outputs["rms", 30.0], atol=1e-4, rtol=1e-4)
    assert (outputs["none", 1.0] - outputs["none", 30.0]).abs().max() > 0.05
    with pytest.raises(ClipfuseError, match="text_scale must be 'rms' or 'none'"):
        ConvFormerHead(IN_CHANNELS, text, dim=16, num_blocks=1, heads=2, text_scale="l2")


def test_default_pool_heads_follow_clip_head_width():
    assert default_pool_heads(2048) == 32
    assert default_pool_heads(320) == 5
    assert default_pool_heads(200) == 2  # 3 does not divide 200
    assert default_pool_heads(8) == 1


def test_denseclip_gamma_and_context_decoder_defaults():
    head = DenseCLIPHead(IN_CHANNELS, torch.randn(K, TEXT_WIDTH))
    assert head.gamma.shape == (TEXT_WIDTH,)
    torch.testing.assert_close(head.gamma, torch.full((TEXT_WIDTH,), 1e-4))
    assert len(head.context_decoder.layers) == 3
    assert head.context_decoder.text_proj[1].out_features == 256
    assert head.context_decoder.layers[0].self_attn.heads == 4


def _timm_clip_pool(channels: int = 128, out: int = 24) -> nn.Module:
    """timm's CLIP attention pool (as in ``resnet50_clip``'s head), random weights."""
    from timm.layers import AttentionPool2d

    torch.manual_seed(3)
    pool = AttentionPool2d(channels, feat_size=7, out_features=out, qkv_separate=True).eval()
    nn.init.normal_(pool.pos_embed, std=0.5)  # visible in the output
    return pool


def test_clip_pool_copy_computes_what_clips_attention_pool_computes():
    clip = _timm_clip_pool()
    head = DenseCLIPHead(128, torch.randn(K, 24), clip_pool=clip.state_dict(), pool_size=7)
    assert head.pool_from_clip and head.pool.num_heads == clip.num_heads == 2
    c5 = torch.randn(2, 128, 7, 7)  # CLIP's own 7x7 grid: no interpolation on either side
    global_feature, dense = head.pool(c5)
    with torch.no_grad():
        torch.testing.assert_close(global_feature, clip(c5))
        clip.pool_type = ""  # timm's spatial output: the pixel tokens
        torch.testing.assert_close(dense, clip(c5))


def test_clip_pool_copy_interpolates_the_positional_grid_as_denseclip():
    clip = _timm_clip_pool().state_dict()
    head = DenseCLIPHead(128, torch.randn(K, 24), clip_pool=clip, pool_size=16)
    positions = head.pool.positional_embedding
    assert positions.shape == (16 * 16 + 1, 128)
    torch.testing.assert_close(positions[0], clip["pos_embed"][0])
    grid = clip["pos_embed"][1:].reshape(1, 7, 7, 128).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(positions[1:], expected.reshape(128, 256).T)
    assert head.pool.c_proj.out_features == 24  # embed_dim: CLIP's width, not the text's
    projected = DenseCLIPHead(128, torch.randn(K, 12), clip_pool=clip)
    assert isinstance(projected.text_proj, nn.Linear) and projected.text_proj.out_features == 24
    with pytest.raises(ClipfuseError, match="CLIP attention pool does not fit"):
        DenseCLIPHead(128, torch.randn(K, 12), clip_pool=clip, embed_dim=12)
    with pytest.raises(ClipfuseError, match="has 2 heads, pool_heads=4"):
        DenseCLIPHead(128, torch.randn(K, 24), clip_pool=clip, pool_heads=4)
    assert not DenseCLIPHead(128, torch.randn(K, 24)).pool_from_clip


def test_denseclip_on_a_clip_resnet_starts_from_its_attention_pool():
    from clipfuse.backbones import create_backbone
    from clipfuse.models import create_model

    text = torch.randn(K, 1024)
    torch.manual_seed(0)
    clip = create_backbone("resnet50_clip.openai").attention_pool  # random weights, no hub
    torch.manual_seed(0)  # the same random backbone inside the model
    model = create_model(
        "denseclip",
        "resnet50_clip.openai",
        text_embeddings=text,
        head_kwargs={"context_width": 16, "context_heads": 2},
        decoder_kwargs={"channels": 16},
    )
    pool = model.head.pool.state_dict()
    for ours, theirs in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("c_proj", "proj")):
        for kind in ("weight", "bias"):
            assert torch.equal(pool[f"{ours}.{kind}"], clip[f"{theirs}.{kind}"]), (ours, kind)
    assert torch.equal(pool["positional_embedding"][0], clip["pos_embed"][0])
    grid = clip["pos_embed"][1:].reshape(1, 7, 7, 2048).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(pool["positional_embedding"][1:], expected.reshape(2048, 256).T)
