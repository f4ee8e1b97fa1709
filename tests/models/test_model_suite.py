"""One suite over every method x decoder on a tiny backbone (segmentation_models_pytorch's
style): forward shapes, finite gradients, a save_pretrained / load round trip, ONNX export
(dynamo) and a bf16 autocast forward. A method added to ``clipfuse.models.factory.METHODS``
is tested here once :func:`helpers.tiny_config` knows its tiny head options."""

import numpy as np
import pytest
import torch
from helpers import tiny_config

import clipfuse
from clipfuse.build import create_model_from_config
from clipfuse.config import apply_overrides
from clipfuse.inference import ClipfuseModel
from clipfuse.inference.export import OnnxSegmentor, export_onnx
from clipfuse.models.factory import METHODS, method_uses_text

CLASSES = ["sky", "road", "car"]
SIZE = 64  # a multiple of 32: the exported graph is the model itself
DECODERS = ["fpn", "upernet", "lraspp", "smp_fpn"]
# decoders whose width is not tiny_config's ``channels``: lraspp's is inter_channels, smp's FPN
# has its own two (GroupNorm: multiples of 32)
TINY_WIDTHS = {
    "lraspp": ["model.decoder_kwargs={inter_channels: 16}"],
    "smp_fpn": ["model.decoder_kwargs={pyramid_channels: 32, segmentation_channels: 32}"],
}
CASES = [(method, decoder) for method in METHODS for decoder in DECODERS]
# A dynamo export takes 55-85 s on a 2-core AVX2 CPU: every head once, the decoders taken in
# turn (UPerNet's pooling included). plain + fpn is exported by tests/inference/test_export.py.
# lraspp and smp_fpn have no export case here: each would add about a minute.
ONNX_CASES = [
    (method, ("fpn", "upernet")[index % 2])
    for index, method in enumerate(method for method in METHODS if method != "plain")
]


def case_id(case: tuple[str, str]) -> str:
    return "-".join(case)


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def case(request):
    """``(config, model)``: a tiny model of one method and decoder (random weights, text
    ``random:32``, mobilenetv2_100 not pretrained), in eval mode."""
    method, decoder = request.param
    overrides = [f"model.decoder={decoder}", *TINY_WIDTHS.get(decoder, [])]
    config = apply_overrides(tiny_config("unused", method), overrides)
    torch.manual_seed(0)
    return config, create_model_from_config(config, CLASSES, pretrained=False).eval()


def test_forward_shapes(case):
    config, model = case
    with torch.inference_mode():
        outputs = model(images())
    assert outputs["logits"].shape == (2, len(CLASSES), SIZE, SIZE)
    assert model.num_classes == len(CLASSES)
    if method_uses_text(config["model"]["method"]):
        assert outputs["score_map"].shape == (2, len(CLASSES), SIZE // 32, SIZE // 32)
    else:
        assert set(outputs) == {"logits"}


def test_backward_gives_finite_gradients(case):
    _, model = case
    model.train()
    try:
        logits = model(images())["logits"]
        weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
        (logits * weights).sum().backward()  # random weights: a plain sum is flat under BN
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert all(p.grad is not None for p in trainable.values()), [
            n for n, p in trainable.items() if p.grad is None
        ]
        assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_save_pretrained_and_load_give_identical_outputs(case, tmp_path):
    config, model = case
    folder = ClipfuseModel(model, config, CLASSES).save_pretrained(tmp_path / "model")
    loaded = clipfuse.load(folder, device="cpu").segmentor
    with torch.inference_mode():
        before, after = model(images())["logits"], loaded(images())["logits"]
    assert torch.equal(before, after)


@pytest.mark.parametrize("case", ONNX_CASES, indirect=True, ids=case_id)
def test_onnx_export_matches_pytorch(case, tmp_path):
    _, model = case
    out = export_onnx(model, tmp_path / "model.onnx", size=(SIZE, SIZE), class_names=CLASSES)
    with torch.inference_mode():
        reference = model(images(1))["logits"].numpy()
    logits = OnnxSegmentor(out, threads=1).logits(images(1).numpy())
    assert logits.shape == reference.shape
    assert np.abs(logits - reference).max() <= 1e-4 * max(1.0, float(np.abs(reference).max()))


def test_bf16_autocast_forward(case):
    _, model = case
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images())["logits"]
    assert logits.shape == (2, len(CLASSES), SIZE, SIZE)
    assert torch.isfinite(logits.float()).all()
