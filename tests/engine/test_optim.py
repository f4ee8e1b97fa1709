import pytest
import torch

from clipfuse.engine import PolyWithWarmup, create_optimizer, parameter_groups
from clipfuse.errors import ClipfuseError
from clipfuse.models import create_model


def test_backbone_lr_is_scaled_and_norms_and_biases_are_not_decayed():
    model = create_model("plain", "mobilenetv2_100", num_classes=3, decoder_kwargs={"channels": 16})
    groups = {
        g["name"]: g
        for g in parameter_groups(model, lr=0.01, weight_decay=5e-4, backbone_lr_mult=0.1)
    }
    assert set(groups) == {"backbone", "backbone_no_decay", "decoder", "decoder_no_decay"}
    assert groups["backbone"]["lr"] == pytest.approx(0.001)
    assert groups["decoder"]["lr"] == pytest.approx(0.01)
    assert groups["decoder_no_decay"]["weight_decay"] == 0.0
    decayed = {id(p) for g in ("backbone", "decoder") for p in groups[g]["params"]}
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert id(module.weight) not in decayed
    assert all(p.ndim > 1 for g in ("backbone", "decoder") for p in groups[g]["params"])
    total = sum(p.numel() for g in groups.values() for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_language_head_lr_is_scaled_and_the_logged_group_is_the_decoders():
    text = torch.randn(3, 16)
    model = create_model(
        "convformer",
        "mobilenetv2_100",
        num_classes=3,
        text_embeddings=text,
        head_kwargs={"dim": 16, "num_blocks": 1, "heads": 2, "gate_init": 1e-4},
        decoder_kwargs={"channels": 16},
    )
    groups = parameter_groups(model, 0.01, 5e-4, backbone_lr_mult=0.1, head_lr_mult=10.0)
    assert groups[0]["name"] == "decoder" and groups[0]["lr"] == pytest.approx(0.01)
    by_name = {g["name"]: g for g in groups}
    assert by_name["language_head"]["lr"] == pytest.approx(0.1)
    assert by_name["language_head_no_decay"]["lr"] == pytest.approx(0.1)
    gates = {id(model.head.fusion.image_gate), id(model.head.fusion.text_gate)}
    assert gates <= {id(p) for p in by_name["language_head_no_decay"]["params"]}
    head = {id(p) for g in groups if g["name"].startswith("language_head") for p in g["params"]}
    assert head == {id(p) for p in model.head.parameters()}


def test_optimizers_and_unknown_name():
    model = torch.nn.Linear(2, 2)
    assert isinstance(create_optimizer(model, "adamw", lr=1e-3), torch.optim.AdamW)
    assert isinstance(create_optimizer(model, "sgd"), torch.optim.SGD)
    with pytest.raises(ClipfuseError, match="unknown optimizer 'lamb'"):
        create_optimizer(model, "lamb")


def test_poly_schedule_with_linear_warmup():
    schedule = PolyWithWarmup(max_steps=100, warmup_steps=10, power=0.9)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx((1 - 0.1) ** 0.9)
    assert schedule(55) == pytest.approx((1 - 0.55) ** 0.9)
    assert schedule(100) == 0.0
    values = [schedule(s) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)
