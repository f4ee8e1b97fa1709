"""Conv-Former blocks and module (docs/research/method.md Sec. 2, ablations of section 4)."""

import pytest
import torch
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.models.convformer import (
    Conv,
    Conv2Former,
    ConvFormer,
    ConvFormerBlock,
    Former,
    Former2Conv,
)
from clipfuse.models.score_map import cosine_score_map

DIM, HEADS, K = 16, 2, 3


@pytest.mark.parametrize("size", [(5, 7), (16, 16), (3, 3), (1, 2)])
@pytest.mark.parametrize("bridge", ["attn", "dot"])
@pytest.mark.parametrize("downsample", ["dense", "depthwise"])
def test_conv_former_shapes(size, bridge, downsample):
    torch.manual_seed(0)
    model = ConvFormer(DIM, num_blocks=2, heads=HEADS, bridge=bridge, downsample=downsample)
    image = torch.randn(2, DIM, *size)
    for text in (torch.randn(K, DIM), torch.randn(2, K, DIM)):
        out_image, out_text = model(image, text)
        assert out_image.shape == image.shape
        assert out_text.shape == (2, K, DIM)
        assert torch.isfinite(out_image).all() and torch.isfinite(out_text).all()


def test_outer_residual_of_eq1():
    torch.manual_seed(0)
    model = ConvFormer(DIM, num_blocks=2, heads=HEADS).eval()
    image, text = torch.randn(2, DIM, 5, 7), torch.randn(2, K, DIM)
    block_image, block_text = image, text
    for block in model.blocks:
        block_image, block_text = block(block_image, block_text)
    out_image, out_text = model(image, text)
    torch.testing.assert_close(out_image, block_image + image)
    torch.testing.assert_close(out_text, block_text + text)


def test_gated_branches_start_at_the_identity_and_learn():
    torch.manual_seed(0)
    model = ConvFormer(DIM, num_blocks=2, heads=HEADS, gate_init=0.0).eval()
    image, text = torch.randn(2, DIM, 5, 7), torch.randn(2, K, DIM)
    out_image, out_text = model(image, text)
    torch.testing.assert_close(out_image, image)  # at step 0: [I', T'] = [I0, T0]
    torch.testing.assert_close(out_text, text)
    (out_image.square().sum() + out_text.square().sum()).backward()
    assert model.image_gate.grad.abs().sum() > 0 and model.text_gate.grad.abs().sum() > 0
    with torch.no_grad():
        model.image_gate.fill_(0.5)
        model.text_gate.fill_(2.0)
    block_image, block_text = image, text
    for block in model.blocks:
        block_image, block_text = block(block_image, block_text)
    out_image, out_text = model(image, text)
    torch.testing.assert_close(out_image, 0.5 * block_image + image)
    torch.testing.assert_close(out_text, 2.0 * block_text + text)
    assert ConvFormer(DIM, num_blocks=1, heads=HEADS).image_gate is None  # the paper: no gate


def test_block_order_conv2former_and_conv_see_block_input():
    torch.manual_seed(0)
    block = ConvFormerBlock(DIM, HEADS)
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen[name] = (args, output)

        return hook

    for name in ("conv2former", "conv", "former2conv", "former"):
        getattr(block, name).register_forward_hook(record(name))
    image, text = torch.randn(2, DIM, 4, 4), torch.randn(2, K, DIM)
    block(image, text)
    assert seen["conv2former"][0][0] is image
    assert seen["conv"][0][0] is image
    assert seen["former"][0][0] is seen["conv2former"][1]
    assert seen["former2conv"][0][0] is seen["conv"][1]
    assert seen["former2conv"][0][1] is seen["former"][1]


def test_conv2former_downsamples_to_ceil_thirds():
    module = Conv2Former(DIM, HEADS)
    tokens = {}
    module.down_norm.register_forward_hook(lambda m, a, out: tokens.update(x=out))
    module(torch.randn(1, DIM, 16, 5), torch.randn(1, K, DIM))
    assert tokens["x"].shape == (1, DIM, 6, 2)  # 16 -> 18 -> 6, 5 -> 6 -> 2
    assert module.down.bias is None and module.down.kernel_size == (3, 3)
    assert module.down.stride == (3, 3)


def test_former_is_post_layernorm():
    torch.manual_seed(0)
    former = Former(DIM, HEADS)
    out = former(torch.randn(2, K, DIM) * 5)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, K), atol=1e-5, rtol=0)
    assert former.ffn[0].out_features == 2 * DIM
    assert isinstance(former.ffn[1], nn.GELU)


def test_conv_is_inverted_bottleneck_with_identity():
    conv = Conv(DIM, expand_ratio=6)
    assert conv.block[0].out_channels == 6 * DIM
    assert conv.block[3].groups == 6 * DIM
    nn.init.zeros_(conv.block[-1].weight)  # last BN scale 0: the branch vanishes
    image = torch.randn(2, DIM, 4, 5)
    torch.testing.assert_close(conv.eval()(image), image)


def test_former2conv_has_no_query_or_output_projection():
    module = Former2Conv(DIM, HEADS)
    linears = {name for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    assert linears == {"k_proj", "v_proj"}


def test_dot_bridge_is_parameter_free():
    block = ConvFormerBlock(DIM, HEADS, bridge="dot")
    for bridge in (block.conv2former, block.former2conv):
        assert not any(isinstance(m, nn.Linear) for m in bridge.modules())
    assert sum(p.numel() for p in block.former2conv.parameters()) == 0
    # the down-sampling conv and the LayerNorm stay: same topology
    assert isinstance(block.conv2former.down, nn.Conv2d)
    assert isinstance(block.conv2former.norm, nn.LayerNorm)


def test_dot_bridge_formula():
    torch.manual_seed(0)
    module = Former2Conv(DIM, HEADS, bridge="dot")
    image, text = torch.randn(1, DIM, 2, 3), torch.randn(1, K, DIM)
    pixels = image.flatten(2).transpose(1, 2)
    cosine = torch.nn.functional.cosine_similarity(pixels[:, :, None], text[:, None], dim=-1)
    expected = pixels + (cosine / K) @ text
    torch.testing.assert_close(module(image, text).flatten(2).transpose(1, 2), expected)


def test_depthwise_downsample_has_far_fewer_params():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    dense = ConvFormer(64, num_blocks=2, heads=4)
    depthwise = ConvFormer(64, num_blocks=2, heads=4, downsample="depthwise")
    assert depthwise.blocks[0].conv2former.down.groups == 64
    assert count(dense) - count(depthwise) == 2 * (9 * 64 * 64 - 9 * 64)
    assert count(depthwise.blocks[0].conv2former.down) * 60 < count(
        dense.blocks[0].conv2former.down
    )


def test_initialisation_choice():
    block = ConvFormerBlock(DIM, HEADS)
    for module in block.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0
            assert 0.01 < module.weight.std() < 0.03  # trunc-normal(0.02)
        if isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.count_nonzero(module.bias) == 0


def test_invalid_configuration_raises():
    with pytest.raises(ClipfuseError, match="heads"):
        ConvFormer(dim=10, heads=3)
    with pytest.raises(ClipfuseError, match="bridge"):
        ConvFormer(dim=16, heads=2, bridge="cross")
    with pytest.raises(ClipfuseError, match="downsample"):
        ConvFormer(dim=16, heads=2, downsample="pool")
    with pytest.raises(ClipfuseError, match="num_blocks"):
        ConvFormer(dim=16, heads=2, num_blocks=0)


def test_cosine_score_map_shared_and_batched_text():
    torch.manual_seed(0)
    image, text = torch.randn(2, DIM, 3, 4), torch.randn(K, DIM)
    shared = cosine_score_map(image, text)
    batched = cosine_score_map(image, text.expand(2, -1, -1))
    assert shared.shape == (2, K, 3, 4)
    torch.testing.assert_close(shared, batched)
    expected = torch.nn.functional.cosine_similarity(
        image[:, None], text[None, :, :, None, None], dim=2
    )
    torch.testing.assert_close(shared, expected)
    assert shared.abs().max() <= 1 + 1e-6
