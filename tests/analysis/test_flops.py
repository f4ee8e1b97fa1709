"""GMACs and parameter counts (docs/research/method.md Sec. 2 and 5)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipfuse.analysis.flops import count_macs, count_params, flop_counter
from clipfuse.errors import ClipfuseError
from clipfuse.models.convformer import ConvFormer, ConvFormerBlock


def block_macs(c: int, k: int, h: int, w: int) -> int:
    """Analytic MACs of one Conv-Former block (expansion 6, FFN 2; independent of heads)."""
    m = math.ceil(h / 3) * math.ceil(w / 3)  # down-sampled image tokens
    p, e, f = h * w, 6 * c, 2 * c
    conv2former = 9 * c * c * m + k * c * c + 2 * k * m * c + k * c * c  # down, Wq, QK+AV, Wo
    former = 3 * k * c * c + 2 * k * k * c + k * c * c + 2 * k * c * f  # qkv, QK+AV, Wo, FFN
    conv = p * c * e + 9 * p * e + p * e * c  # 1x1 expand, depthwise 3x3, 1x1 project
    former2conv = 2 * k * c * c + 2 * p * k * c  # Wk, Wv, QK+AV
    return conv2former + former + conv + former2conv


def block_params(c: int) -> int:
    e, f = 6 * c, 2 * c
    conv2former = 9 * c * c + 2 * c + 2 * (c * c + c) + 2 * c  # down + BN, Wq, Wo, LN
    former = 3 * c * c + 3 * c + c * c + c + c * f + f + f * c + c + 4 * c
    conv = c * e + 2 * e + 9 * e + 2 * e + e * c + 2 * c
    former2conv = c * c + c * c + c  # Wk (no bias), Wv
    return conv2former + former + conv + former2conv


def test_one_block_matches_the_analytic_count():
    torch.manual_seed(0)
    c, k, h, w = 64, 10, 16, 16
    block = ConvFormerBlock(c, heads=4)
    cost = count_macs(block, ((1, c, h, w), (1, k, c)))
    assert cost["gmacs"] * 1e9 == pytest.approx(block_macs(c, k, h, w), rel=0.01)
    assert cost["params_m"] * 1e6 == block_params(c) == count_params(block)


def test_attention_is_counted():
    class PureAttention(nn.Module):
        def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, kv, kv)

    cost = count_macs(PureAttention(), ((2, 4, 10, 8), (2, 4, 36, 8)))
    assert cost["gmacs"] * 1e9 == 2 * (2 * 4 * 10 * 36 * 8)  # Q K^T and softmax(.) V
    assert cost["params_m"] == 0


def test_attention_backward_is_counted():
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(1, 2, 5, 8, requires_grad=True)
    kv = torch.randn(1, 2, 7, 8, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, kv, kv).sum().backward()
    assert counter.get_total_flops() > 2 * 2 * (2 * 5 * 7 * 8)


def test_groups_split_the_total():
    torch.manual_seed(0)
    c, k, h, w = 32, 5, 8, 8
    block = ConvFormerBlock(c, heads=4)
    groups = {"text": block.former, "conv": block.conv}
    cost = count_macs(block, ((1, c, h, w), (1, k, c)), groups=groups)
    p, e = h * w, 6 * c
    assert cost["groups"]["conv"]["gmacs"] * 1e9 == p * c * e + 9 * p * e + p * e * c
    assert cost["groups"]["text"]["params_m"] * 1e6 == count_params(block.former)
    total = sum(group["gmacs"] for group in cost["groups"].values())
    assert total == pytest.approx(cost["gmacs"])
    params = sum(group["params_m"] for group in cost["groups"].values())
    assert params == pytest.approx(cost["params_m"])
    assert cost["groups"]["other"]["gmacs"] > 0  # the two bridges
    assert block.training  # mode restored


def test_groups_must_be_submodules():
    block = ConvFormerBlock(16, heads=2)
    with pytest.raises(ClipfuseError, match="submodule"):
        count_macs(block, ((1, 16, 4, 4), (1, 3, 16)), groups={"x": nn.Linear(2, 2)})
    with pytest.raises(ClipfuseError, match="reserved"):
        count_macs(block, ((1, 16, 4, 4), (1, 3, 16)), groups={"other": block.conv})


def test_paper_size_cost():
    """docs/research/method.md Sec. 2: ~1.4 GMACs / ~8.7 M per block, ~8.4 GMACs / ~52 M for
    six, at C = 512, K = 150, 16 x 16 image tokens, 8 heads. Counted on the meta device (no
    compute)."""
    shapes = ((1, 512, 16, 16), (1, 150, 512))
    with torch.device("meta"):
        block = ConvFormerBlock(512, heads=8)
        six = ConvFormer(512, num_blocks=6, heads=8)
    one_cost, six_cost = count_macs(block, shapes), count_macs(six, shapes)
    assert one_cost["gmacs"] == pytest.approx(1.4, rel=0.1)
    assert one_cost["params_m"] == pytest.approx(8.7, rel=0.1)
    assert six_cost["gmacs"] == pytest.approx(8.4, rel=0.1)
    assert six_cost["params_m"] == pytest.approx(52, rel=0.1)
    assert one_cost["gmacs"] * 1e9 == pytest.approx(block_macs(512, 150, 16, 16), rel=0.01)


@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("transposed", [False, True])
def test_a_convolution_backward_counts_each_gradient_as_its_forward(groups, transposed):
    # PyTorch 2.14.1's own formula counts a grouped weight gradient `groups` times too many
    kind = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = kind(8, 8, 3, padding=1, groups=groups, bias=False)
    inputs = torch.randn(2, 8, 6, 6, requires_grad=True)
    analytic = 2 * 2 * 6 * 6 * 8 * (8 // groups) * 3 * 3  # N H W C_out C_in/groups k k
    with flop_counter() as counter:
        output = conv(inputs)
        assert counter.get_total_flops() == analytic
        output.sum().backward()
    assert counter.get_total_flops() == 3 * analytic  # forward, input and weight gradients
    inputs.requires_grad_(False)
    with flop_counter() as counter:
        conv(inputs).sum().backward()
    assert counter.get_total_flops() == 2 * analytic  # no input gradient
