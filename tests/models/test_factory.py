import pytest
import torch
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.models import create_model
from clipfuse.models.convformer import ConvFormerHead
from clipfuse.models.denseclip import DenseCLIPHead


def test_plain_predicts_logits_at_input_size():
    model = create_model("plain", "mobilenetv2_100", num_classes=4, decoder_kwargs={"channels": 16})
    outputs = model(torch.randn(1, 3, 70, 90))
    assert set(outputs) == {"logits"}
    assert outputs["logits"].shape == (1, 4, 70, 90)


def test_factory_errors_are_clear():
    with pytest.raises(ClipfuseError, match="unknown method 'segformer'"):
        create_model("segformer", num_classes=3)
    with pytest.raises(ClipfuseError, match="needs text embeddings"):
        create_model("convformer", num_classes=3)
    with pytest.raises(ClipfuseError, match="num_classes=4 but 3 class embeddings"):
        create_model("convformer", num_classes=4, text_embeddings=torch.randn(3, 8))


class _Backbone(nn.Module):
    """What a head reads of a backbone: the c5 width and, on a CLIP ResNet, its pool."""

    def __init__(self, attention_pool: dict | None) -> None:
        super().__init__()
        self.channels = [16, 32, 64, 128]
        self.attention_pool = attention_pool


def test_denseclip_takes_the_clip_pool_from_the_backbone_and_the_backbone_forgets_it():
    from timm.layers import AttentionPool2d

    clip = AttentionPool2d(128, feat_size=7, out_features=24, qkv_separate=True).state_dict()
    backbone = _Backbone(clip)
    head = DenseCLIPHead.from_backbone(backbone, torch.randn(3, 24), context_width=16)
    assert head.pool_from_clip and backbone.attention_pool is None
    torch.testing.assert_close(head.pool.q_proj.weight, clip["q.weight"])
    assert head.pool.c_proj.out_features == 24 and head.visual_channels == 128
    plain = DenseCLIPHead.from_backbone(_Backbone(None), torch.randn(3, 24), context_width=16)
    assert not plain.pool_from_clip


def test_other_heads_read_only_the_c5_width_of_the_backbone():
    clip = {"pos_embed": torch.zeros(50, 128)}
    backbone = _Backbone(clip)
    head = ConvFormerHead.from_backbone(backbone, torch.randn(3, 24), dim=16, heads=2)
    assert head.image_proj[0].in_channels == 128
    assert backbone.attention_pool is clip  # not its to take
