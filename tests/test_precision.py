"""Precision and memory format: what ``auto`` resolves to, and what stays fp32 under autocast."""

import pytest
import torch
from helpers import tiny_config

from clipfuse import precision as precision_module
from clipfuse.build import create_model_from_config
from clipfuse.config import apply_overrides
from clipfuse.errors import ClipfuseError
from clipfuse.evaluation import infer_probabilities
from clipfuse.fusion.score_map import cosine_score_map
from clipfuse.losses import segmentation_loss
from clipfuse.precision import AutocastWeights, inference_dtype, resolve_precision
from clipfuse.seeding import init_rng


@pytest.mark.parametrize("fast, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_follows_the_cpu(monkeypatch, fast, expected):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: fast)
    precision, channels_last, note = resolve_precision("auto", "auto", accelerator="cpu")
    assert (precision, channels_last) == (expected, fast)
    assert expected in note and ("channels-last" if fast else "contiguous") in note
    assert inference_dtype("auto", "cpu") == (torch.bfloat16 if fast else None)


def test_explicit_settings_win_and_are_not_announced(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("32-true", False, "cpu") == ("32-true", False, None)
    assert resolve_precision("32-true", "auto", "cpu")[:2] == ("32-true", False)
    assert resolve_precision("bf16-mixed", False, "cpu") == ("bf16-mixed", False, None)


def test_unknown_eval_precision_is_a_clear_error():
    with pytest.raises(ClipfuseError, match="eval.precision 'fp8'"):
        inference_dtype("fp8", "cpu")


def test_loss_and_score_map_stay_fp32_under_autocast():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 8, 4, 4, generator=generator)
    text = torch.randn(3, 8, generator=generator)
    masks = torch.randint(0, 3, (2, 16, 16), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = cosine_score_map(image.bfloat16(), text)
        logits = torch.nn.functional.interpolate(image[:, :3].bfloat16(), size=(16, 16))
        losses = segmentation_loss({"logits": logits, "score_map": scores}, masks)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, cosine_score_map(image.bfloat16().float(), text), atol=1e-6)
    assert all(value.dtype == torch.float32 for value in losses.values())
    assert set(losses) == {"loss", "loss_seg", "loss_aux"}


def test_bf16_inference_agrees_with_fp32_and_returns_fp32():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 5, 1)
    ).eval()
    images = torch.randn(2, 3, 24, 32)
    with torch.no_grad():
        fp32 = infer_probabilities(model, images, 5, precision="32-true")
        bf16 = infer_probabilities(model, images, 5, precision="bf16-mixed")
        inner = torch.autocast("cpu", dtype=torch.bfloat16)
        with inner:  # an outer autocast (Lightning's) does not override 32-true
            assert infer_probabilities(model, images, 5, precision="32-true").equal(fp32)
    assert bf16.dtype == torch.float32 and not bf16.equal(fp32)
    assert (bf16 - fp32).abs().max() < 0.05
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() > 0.95


@pytest.mark.parametrize("bf16, expected", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_a_gpu(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert resolve_precision("auto", "auto", accelerator="auto")[:2] == (expected, True)
    assert resolve_precision("auto", "auto", accelerator="cpu")[0] != "16-mixed"


@pytest.mark.parametrize(
    ("method", "decoder", "text_classifier"),
    [
        ("plain", "fpn", False),
        ("convformer", "fpn", False),
        ("convformer", "fpn", True),
        ("denseclip", "upernet", False),
    ],
)
def test_weights_cast_once_predict_as_autocast_does_bit_for_bit(
    tmp_path, method, decoder, text_classifier
):
    config = tiny_config(tmp_path / "no-data", method)
    changes = [f"model.decoder={decoder}", f"model.text_classifier={str(text_classifier).lower()}"]
    config = apply_overrides(config, changes)
    with init_rng(0):
        model = create_model_from_config(config, ["sky", "road", "car"], pretrained=False)
    model = model.eval().to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)

    def logits() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(images)["logits"]

    expected = logits()
    fp32 = {key: value.clone() for key, value in model.state_dict().items()}
    weights = AutocastWeights(model, torch.bfloat16)
    assert len(weights.weights) > 5
    pointers = []
    for _ in range(2):
        with weights.applied():
            assert all(weight.dtype == torch.bfloat16 for weight in weights.weights)
            pointers.append([weight.data_ptr() for weight in weights.weights])
            assert torch.equal(logits(), expected)
    assert pointers[0] == pointers[1]  # cast once, not per use
    for key, value in model.state_dict().items():  # the model's own fp32 tensors again
        assert value.dtype == fp32[key].dtype and torch.equal(value, fp32[key]), key
    with torch.no_grad():  # a weight changed in place (training, load_state_dict) is cast again
        weights.weights[0].mul_(2)
    changed = logits()
    assert not torch.equal(changed, expected)
    with weights.applied():
        assert torch.equal(logits(), changed)
    assert AutocastWeights(model, None).weights == []  # fp32 inference casts nothing
