import pytest
import torch

from clipfuse.decoders import SemanticFPN, create_decoder
from clipfuse.errors import ClipfuseError

CHANNELS = [24, 32, 96, 320]


def features(batch=2, size=64):
    return [
        torch.randn(batch, c, size // s, size // s)
        for c, s in zip(CHANNELS, (4, 8, 16, 32), strict=True)
    ]


@pytest.mark.parametrize("name", ["fpn", "upernet"])
def test_decoders_predict_k_channels_at_stride_4(name):
    decoder = create_decoder(name, CHANNELS, num_classes=7, channels=32)
    logits = decoder(features())
    assert logits.shape == (2, 7, 16, 16)
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
    with pytest.raises(ClipfuseError, match="expected one of fpn, upernet"):
        create_decoder("deeplab", CHANNELS, 3)
