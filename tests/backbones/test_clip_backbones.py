"""CLIP image towers as backbones (the paper's Table 2), with random weights (no hub here)."""

import pytest
import timm
import torch
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from clipfuse.backbones import clip_model_of, create_backbone
from clipfuse.errors import ClipfuseError
from clipfuse.models import create_model

CLIP_BACKBONES = {
    "resnet50_clip.openai": ({}, 1024),
    "resnet101_clip.openai": ({}, 512),
    "vit_base_patch16_clip_224.openai": ({"img_size": 64}, 512),
}


def _weighted_loss(*tensors: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return sum((t * torch.randn(t.shape, generator=generator)).sum() for t in tensors)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet50_clip.openai", "RN50/openai"),
        ("resnet50_clip.yfcc15m", "RN50/yfcc15m"),
        ("resnet50_clip", "RN50/openai"),  # timm's default tag
        ("resnet101_clip.openai", "RN101/openai"),
        ("vit_base_patch16_clip_224.openai", "ViT-B-16/openai"),
        ("vit_base_patch16_clip_224.laion2b", "ViT-B-16/laion2b_s34b_b88k"),
        ("vit_base_patch16_clip_224", None),  # default tag: fine-tuned on ImageNet
        ("vit_base_patch16_clip_224.openai_ft_in1k", None),
        ("resnet50", None),
        ("mobilenetv2", None),
    ],
)
def test_clip_model_of_names_the_open_clip_model_of_the_image_tower(name, expected):
    assert clip_model_of(name) == expected


@pytest.mark.parametrize("name", CLIP_BACKBONES)
def test_clip_backbones_give_strides_4_to_32_at_any_size_with_gradients(name):
    torch.manual_seed(0)
    kwargs, _ = CLIP_BACKBONES[name]
    backbone = create_backbone(name, **kwargs).train()
    images = torch.randn(1, 3, 64, 96, requires_grad=True)  # not the 224 they were built for
    features = backbone(images)
    assert [f.shape[1] for f in features] == backbone.channels
    assert [(64 // f.shape[-2], 96 // f.shape[-1]) for f in features] == [
        (4, 4),
        (8, 8),
        (16, 16),
        (32, 32),
    ]
    _weighted_loss(*features).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    first = next(p for p in backbone.body.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert backbone.mean == pytest.approx([255 * m for m in OPENAI_CLIP_MEAN])
    assert backbone.std == pytest.approx([255 * s for s in OPENAI_CLIP_STD])


def test_clip_resnet_keeps_its_attention_pool_outside_the_parameters():
    backbone = create_backbone("resnet50_clip.openai")
    pool = backbone.attention_pool
    assert pool["pos_embed"].shape == (50, 2048) and pool["proj.weight"].shape == (1024, 2048)
    assert backbone.channels == [256, 512, 1024, 2048]
    parameters = {id(p) for p in backbone.parameters()}
    assert all(id(t) not in parameters for t in pool.values())
    assert not any(key.startswith("head") for key in backbone.state_dict())
    # Same trunk as timm's own features_only model: its state dict loads strictly.
    reference = timm.create_model("resnet50_clip.openai", features_only=True)
    backbone.body.load_state_dict(reference.state_dict(), strict=True)
    assert create_backbone("vit_base_patch16_clip_224.openai", img_size=64).attention_pool is None


def test_an_unknown_pretrained_tag_is_a_one_line_error():
    with pytest.raises(ClipfuseError, match=r"unknown pretrained tag \(resnet50_clip.cc12m, "):
        create_backbone("resnet50_clip.openaii")


@pytest.mark.parametrize("method", ["plain", "denseclip", "convformer"])
@pytest.mark.parametrize("name", CLIP_BACKBONES)
def test_every_method_trains_on_every_clip_backbone(name, method):
    torch.manual_seed(0)
    kwargs, text_width = CLIP_BACKBONES[name]
    head_kwargs = {
        "plain": {},
        "denseclip": {"context_width": 16, "context_heads": 2, "pool_size": 2},
        "convformer": {"dim": 32, "num_blocks": 1, "heads": 2},
    }[method]
    text = None if method == "plain" else torch.randn(3, text_width)
    model = create_model(
        method,
        name,
        num_classes=3,
        text_embeddings=text,
        backbone_kwargs=kwargs,
        head_kwargs=head_kwargs,
        decoder_kwargs={"channels": 16},
    ).train()
    if method == "denseclip":  # the pool starts from CLIP's on the ResNets only
        assert model.head.pool_from_clip == name.startswith("resnet")
        assert model.backbone.attention_pool is None  # the copy is the head's, not kept twice
    outputs = model(torch.randn(2, 3, 64, 64))
    assert outputs["logits"].shape == (2, 3, 64, 64)
    _weighted_loss(
        outputs["logits"], *([outputs["score_map"]] if text is not None else [])
    ).backward()
    frozen = {"head.text_embeddings"}
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and p.grad is None and n not in frozen
    ]
    assert not missing, missing[:5]
