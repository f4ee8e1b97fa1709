"""Precision and memory format: what ``auto`` resolves to, and what stays fp32 under autocast."""

import warnings

import pytest
import torch
from helpers import tiny_config

from clipfuse import precision as precision_module
from clipfuse.build import create_model_from_config
from clipfuse.config import apply_overrides
from clipfuse.cpu_probe import Verdict
from clipfuse.errors import ClipfuseError
from clipfuse.evaluation import infer_probabilities
from clipfuse.losses import segmentation_loss
from clipfuse.models.score_map import cosine_score_map
from clipfuse.precision import (
    AutocastWeights,
    inference_channels_last,
    inference_dtype,
    resolve_precision,
)
from clipfuse.seeding import init_rng

MS = {"fp32": 1.0, "fp32-cl": 1.0, "bf16": 1.0, "bf16-cl": 1.0}


def _measured(monkeypatch, train: Verdict, inference: Verdict | None = None) -> None:
    """The probe of clipfuse.cpu_probe, as if it had measured ``train`` and ``inference``."""
    verdicts = {"train": train, "inference": inference or train}
    monkeypatch.setattr(
        precision_module, "cpu_verdict", lambda purpose: (verdicts[purpose], "measured now")
    )


def test_auto_on_a_cpu_takes_the_measured_setting_not_the_flags(monkeypatch):
    # an AVX512-BF16 CPU without AMX: bf16 measured slower, fp32 channels-last fastest
    slow_bf16 = {"fp32": 175.0, "fp32-cl": 156.0, "bf16": 287.0, "bf16-cl": 277.0}
    _measured(monkeypatch, Verdict(precision="32-true", channels_last=True, ms=slow_bf16))
    precision, channels_last, note = resolve_precision("auto", "auto", accelerator="cpu")
    assert (precision, channels_last) == ("32-true", True)
    assert note == (
        "training in 32-true with channels-last tensors (speed against fp32 contiguous: "
        "fp32-cl 1.12x, bf16 0.61x, bf16-cl 0.63x; measured now)"
    )
    assert inference_dtype("auto", "cpu") is None and inference_channels_last("auto", "cpu")
    fast_bf16 = {"fp32": 100.0, "fp32-cl": 100.0, "bf16": 60.0, "bf16-cl": 50.0}
    _measured(monkeypatch, Verdict(precision="bf16-mixed", channels_last=True, ms=fast_bf16))
    assert resolve_precision("auto", "auto", accelerator="cpu")[:2] == ("bf16-mixed", True)
    assert inference_dtype("auto", "cpu") == torch.bfloat16


def test_a_model_trained_in_bf16_is_served_in_fp32_where_fp32_is_faster(monkeypatch):
    trained = Verdict(precision="bf16-mixed", channels_last=True, ms=MS)
    served = Verdict(precision="32-true", channels_last=False, ms={**MS, "fp32-cl": 2.0})
    _measured(monkeypatch, trained, served)
    assert inference_dtype("auto", "cpu") is None
    assert not inference_channels_last("auto", "cpu")
    assert inference_dtype("bf16-mixed", "cpu") == torch.bfloat16  # explicit: as asked


def test_an_explicit_precision_with_auto_layout_takes_that_precisions_faster_layout(monkeypatch):
    ms = {"fp32": 1.0, "fp32-cl": 2.0, "bf16": 3.0, "bf16-cl": 1.5}
    _measured(monkeypatch, Verdict(precision="32-true", channels_last=False, ms=ms))
    assert resolve_precision("bf16-mixed", "auto", "cpu")[:2] == ("bf16-mixed", True)
    assert resolve_precision("32-true", "auto", "cpu")[:2] == ("32-true", False)
    assert inference_channels_last("bf16-mixed", "cpu") and not inference_channels_last(
        "32-true", "cpu"
    )


def test_explicit_settings_win_are_not_announced_and_probe_nothing(monkeypatch):
    def no_probe(purpose):
        raise AssertionError("probed")

    monkeypatch.setattr(precision_module, "cpu_verdict", no_probe)
    assert resolve_precision("32-true", False, "cpu") == ("32-true", False, None)
    assert resolve_precision("bf16-mixed", False, "cpu") == ("bf16-mixed", False, None)
    assert inference_dtype("32-true", "cpu") is None


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
def test_auto_on_a_gpu_follows_its_capability_without_a_probe(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(precision_module, "cpu_verdict", lambda purpose: 1 / 0)
    precision, channels_last, note = resolve_precision("auto", "auto", accelerator="auto")
    assert (precision, channels_last) == (expected, True)
    assert note.endswith("(this GPU has bf16)" if bf16 else "(this GPU has no bf16)")
    assert inference_dtype("auto", "cuda") == (torch.bfloat16 if bf16 else torch.float16)
    assert inference_channels_last("auto", "cuda")
    assert not inference_channels_last("32-true", "cuda")


@pytest.mark.parametrize("precision, scaled", [("16-mixed", True), ("bf16-mixed", False)])
def test_lightning_scales_the_loss_for_fp16_only(precision, scaled):
    """What a GPU run gets from the resolved precision: fp16 with a gradient scaler (its
    small range underflows gradients), bf16 without."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns that CUDA is absent here
        plugin = MixedPrecision(precision, device="cuda")
    assert (plugin.scaler is not None) == scaled


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


@pytest.mark.parametrize(
    ("method", "changes"),
    [
        ("plain", []),
        ("convformer", []),
        ("convformer", ["model.text_classifier=true"]),
        ("denseclip", ["model.decoder=upernet"]),
    ],
)
def test_every_tensor_of_a_model_moves_with_it(tmp_path, method, changes):
    """What a GPU needs without one here: the class-name embeddings (and every other tensor a
    model holds) are parameters or buffers, so ``.to(device)`` moves them; a tensor kept as a
    plain attribute would stay on the CPU. ``meta`` stands in for ``cuda``."""
    config = apply_overrides(tiny_config(tmp_path / "no-data", method), changes)
    with init_rng(0):
        model = create_model_from_config(config, ["sky", "road", "car"], pretrained=False)
    plain = [
        f"{type(module).__name__}.{name}"
        for module in model.modules()
        for name, value in vars(module).items()
        if isinstance(value, torch.Tensor)
    ]
    assert plain == []
    model.to("meta")
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    if model.head is not None:
        assert model.head.text_embeddings.device.type == "meta"
