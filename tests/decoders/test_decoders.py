import pytest
import torch

from clipfuse.analysis import count_macs
from clipfuse.decoders import LRASPP, SemanticFPN, create_decoder
from clipfuse.errors import ClipfuseError

CHANNELS = [24, 32, 96, 320]


def features(batch=2, size=64):
    return [
        torch.randn(batch, c, size // s, size // s)
        for c, s in zip(CHANNELS, (4, 8, 16, 32), strict=True)
    ]


@pytest.mark.parametrize(
    ("name", "options", "stride"),
    [
        ("fpn", {"channels": 32}, 4),
        ("upernet", {"channels": 32}, 4),
        ("fpn", {"channels": 32, "separable": True}, 4),
        ("fpn", {"channels": 32, "levels": 3}, 8),
        ("fpn", {"channels": 32, "levels": 1, "separable": True}, 32),
        ("lraspp", {"inter_channels": 32}, 8),
        ("smp_fpn", {"pyramid_channels": 32, "segmentation_channels": 32}, 4),
    ],
    ids=[
        "fpn",
        "upernet",
        "fpn-separable",
        "fpn-levels3",
        "fpn-levels1-separable",
        "lraspp",
        "smp_fpn",
    ],
)
def test_decoders_predict_k_channels_at_their_stride(name, options, stride):
    decoder = create_decoder(name, CHANNELS, num_classes=7, **options)
    logits = decoder(features())
    assert logits.shape == (2, 7, 64 // stride, 64 // stride)
    logits.mean().backward()
    assert all(p.grad is not None for p in decoder.parameters())


def test_semantic_fpn_has_max_1_i_convs_per_level():
    decoder = SemanticFPN(CHANNELS, num_classes=5, channels=16)
    convs_per_level = [
        sum(isinstance(m, torch.nn.Conv2d) for m in head.modules())
        for head in decoder.head.scale_heads
    ]
    assert convs_per_level == [1, 1, 2, 3]
    assert all(
        isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
        for conv in decoder.neck.lateral
    )


def test_unknown_decoder_lists_known_ones():
    with pytest.raises(ClipfuseError, match="expected one of fpn, upernet, lraspp, smp_fpn"):
        create_decoder("deeplab", CHANNELS, 3)


def test_semantic_fpn_default_layout_is_the_papers():
    """``separable=False, levels=4`` (the defaults) keep the paper's modules, names and shapes:
    the checkpoints trained before these options load unchanged."""
    channels, k = 16, 5
    expected = {}
    for i, c in enumerate(CHANNELS):
        expected |= {f"neck.lateral.{i}.weight": (channels, c, 1, 1)}
        expected |= {f"neck.lateral.{i}.bias": (channels,)}
        expected |= {f"neck.output.{i}.weight": (channels, channels, 3, 3)}
        expected |= {f"neck.output.{i}.bias": (channels,)}
        for step in range(max(1, i)):
            index = 2 * step if i > 0 else 0  # a conv then an Upsample per step
            prefix = f"head.scale_heads.{i}.{index}"
            expected |= {f"{prefix}.0.weight": (channels, channels, 3, 3)}
            for name in ("weight", "bias", "running_mean", "running_var"):
                expected |= {f"{prefix}.1.{name}": (channels,)}
            expected |= {f"{prefix}.1.num_batches_tracked": ()}
    expected |= {"head.classifier.weight": (k, channels, 1, 1), "head.classifier.bias": (k,)}
    for decoder in (
        SemanticFPN(CHANNELS, k, channels),
        SemanticFPN(CHANNELS, k, channels, separable=False, levels=4),
    ):
        state = {name: tuple(t.shape) for name, t in decoder.state_dict().items()}
        assert state == expected


class _OnFeatures(torch.nn.Module):
    """A decoder called on the four maps as separate inputs (what count_macs feeds)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, *maps):
        return self.decoder(list(maps))


def gmacs(decoder, size=256):
    shapes = tuple(
        (1, c, size // s, size // s) for c, s in zip(CHANNELS, (4, 8, 16, 32), strict=True)
    )
    return count_macs(_OnFeatures(decoder).eval(), shapes)["gmacs"]


def test_lighter_decoders_cost_fewer_macs_than_the_default_fpn():
    default = gmacs(SemanticFPN(CHANNELS, 11, channels=128))
    separable = gmacs(SemanticFPN(CHANNELS, 11, channels=128, separable=True))
    three_levels = gmacs(SemanticFPN(CHANNELS, 11, channels=128, levels=3))
    lraspp = gmacs(LRASPP(CHANNELS, 11, inter_channels=128))
    assert separable < default / 4
    assert three_levels < default / 4
    assert lraspp < default / 20


@pytest.mark.parametrize("levels", [0, 5, -1, 2.0, True, "3"])
def test_semantic_fpn_refuses_levels_outside_1_to_4(levels):
    with pytest.raises(ClipfuseError, match=r"levels must be an integer in 1\.\.4, got"):
        SemanticFPN(CHANNELS, 3, levels=levels)


def test_semantic_fpn_refuses_a_separable_that_is_not_a_bool():
    with pytest.raises(ClipfuseError, match="separable must be true or false, got 'yes'"):
        SemanticFPN(CHANNELS, 3, separable="yes")


def test_separable_fpn_uses_depthwise_convs_only_at_3x3():
    decoder = SemanticFPN(CHANNELS, 3, channels=16, separable=True)
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.groups == c.in_channels for c in convs if c.kernel_size == (3, 3))
    assert sum(c.kernel_size == (3, 3) for c in convs) == 4 + 7


def test_smp_fpn_is_smps_decoder_and_says_what_size_it_needs():
    """smp's own ``FPNDecoder``, with the parameter count smp's ``FPN`` gives it; a map that is
    not twice the next (an input not divisible by 32) is a one-line error naming the sizes."""
    from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

    decoder = create_decoder("smp_fpn", CHANNELS, num_classes=7)
    reference = FPNDecoder([3, 16, *CHANNELS], encoder_depth=5)
    assert isinstance(decoder.decoder, FPNDecoder)
    assert sum(p.numel() for p in decoder.decoder.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    odd = [torch.randn(1, c, s, s) for c, s in zip(CHANNELS, (23, 12, 6, 3), strict=True)]
    with pytest.raises(ClipfuseError, match="23x23, 12x12, 6x6, 3x3"):
        decoder(odd)


@pytest.mark.parametrize(("name", "shown"), [("lraspp", "LRASPP"), ("smp_fpn", "smp_fpn")])
def test_decoders_of_four_maps_refuse_three(name, shown):
    with pytest.raises(ClipfuseError, match=rf"^{shown} needs \[c2, c3, c4, c5\], got 3 maps$"):
        create_decoder(name, CHANNELS[1:], num_classes=3)
