"""``clipfuse export --format onnx``: onnxruntime reproduces PyTorch, vocabulary baked in,
dynamic batch / height / width."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import require_shared, snapshot, tiny_config, write_folder_dataset
from PIL import Image

from clipfuse.build import create_model_from_config
from clipfuse.cli import main
from clipfuse.engine import train
from clipfuse.errors import ClipfuseError
from clipfuse.inference.export import ExportableSegmentor, OnnxSegmentor, export_checkpoint
from clipfuse.saved_model import load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Conv-Former trained a few steps (text ``random:32``) and its model."""
    root = tmp_path_factory.mktemp("export")
    data = write_folder_dataset(root / "data")
    train(tiny_config(data, "convformer", max_steps=4, log_every=1), root / "run")
    checkpoint = root / "run" / "checkpoints" / "last.ckpt"
    config, class_names, state = load_checkpoint(checkpoint)
    model = create_model_from_config(
        config, class_names, text_embeddings=state["head.text_embeddings"], pretrained=False
    )
    model.load_state_dict(state)
    return checkpoint, model.eval(), class_names


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def exported(request, trained, tmp_path_factory):
    checkpoint = trained[0]
    out = tmp_path_factory.mktemp(request.param) / "model.onnx"
    if request.param == "dynamo":  # through the command line
        assert main(["export", "--model", str(checkpoint), "--out", str(out)]) == 0
    else:
        export_checkpoint(checkpoint, out, size=(64, 96), exporter="torchscript")
    return OnnxSegmentor(out, threads=1)


def torch_logits(model, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(images)["logits"].numpy()


def rounding_tolerance(reference: np.ndarray) -> float:
    """How far exported logits may drift from ``reference`` by float rounding."""
    return 1e-4 * max(1.0, float(np.abs(reference).max()))


def near_ties(reference: np.ndarray) -> np.ndarray:
    """B x H x W: pixels whose top two classes are tied within twice the rounding tolerance,
    where either class is a right answer."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0] <= 2 * rounding_tolerance(reference)


def assert_close(onnx_logits: np.ndarray, reference: np.ndarray) -> None:
    """Logits equal to float rounding; the same argmax wherever the top two classes are not
    tied within that rounding."""
    assert onnx_logits.shape == reference.shape
    assert np.abs(onnx_logits - reference).max() <= rounding_tolerance(reference)
    same = onnx_logits.argmax(1) == reference.argmax(1)
    assert (same | near_ties(reference)).all()


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 64, 96), (3, 3, 160, 128)])
def test_onnx_matches_pytorch_at_dynamic_sizes(exported, trained, shape):
    """Batch, height and width are dynamic; at multiples of 32 the graph is the model."""
    model = trained[1]
    images = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    assert_close(exported.logits(images.numpy()), torch_logits(model, images))


def test_onnx_other_sizes_pad_to_32(exported, trained):
    """Other sizes are padded to a multiple of 32 in the graph and cropped back."""
    model = trained[1]
    images = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = ExportableSegmentor(model)(images).numpy()
    assert_close(exported.logits(images.numpy()), reference)


def test_vocabulary_and_normalisation_are_in_the_model(exported, trained):
    model, class_names = trained[1], trained[2]
    assert exported.class_names == class_names == ["sky", "road", "car"]
    assert exported.mean == pytest.approx(list(model.backbone.mean))
    assert exported.std == pytest.approx(list(model.backbone.std))
    names = [node.name for node in exported.session.get_inputs()]
    assert names == ["images"]  # no text input: the embeddings are constants
    meta = exported.session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["pad_to"]) == 32 and meta["method"] == "convformer"


def test_real_image_same_labels(exported, trained):
    model = trained[1]
    path = require_shared("samples/cityscapes_segmentation.bmp")
    image = np.asarray(Image.open(path).convert("RGB").resize((128, 64), Image.BILINEAR))
    labels = exported(image)
    mean = torch.tensor(model.backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.std).view(1, 3, 1, 1)
    tensor = (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() - mean) / std
    reference = torch_logits(model, tensor)
    assert_close(exported.logits(tensor.numpy()), reference)
    # A 4-step model has near ties: a pixel whose top two logits are within float rounding
    # may take either label (rare: at most 1% of the image).
    tied = near_ties(reference)[0]
    assert labels.shape == (64, 128) and tied.mean() <= 0.01
    assert (labels == reference[0].argmax(0))[~tied].all()


def test_export_errors(trained, tmp_path, capsys):
    with pytest.raises(ClipfuseError, match="format"):
        export_checkpoint(trained[0], tmp_path / "m.onnx", format="tflite")
    missing = tmp_path / "missing.ckpt"
    assert main(["export", "--model", str(missing), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not found" in capsys.readouterr().err


def test_failed_export_keeps_the_earlier_model(world, tmp_path, monkeypatch):
    from clipfuse.fileio import partial_files
    from clipfuse.inference import export

    out = tmp_path / "model.onnx"
    export.export_checkpoint(world.checkpoint, out, exporter="torchscript")
    import onnx

    onnx.load(str(out))
    before = snapshot(out)

    def interrupted(path, data):
        Path(path).write_bytes(b"18 MB of a 75 MB model")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_write_metadata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_checkpoint(world.checkpoint, out, exporter="torchscript")
    assert snapshot(out) == before
    assert not partial_files(tmp_path)


def test_kill_9_during_export_keeps_the_earlier_model(world, tmp_path):
    from clipfuse.fileio import partial_files

    out = tmp_path / "model.onnx"
    out.write_bytes(b"the good model of an earlier export")
    before = snapshot(out)
    export = subprocess.Popen(
        [sys.executable, "-m", "clipfuse.cli", "export", "--model", str(world.checkpoint)]
        + ["--out", str(out), "--exporter", "torchscript"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".model.onnx.*.partial.onnx")):  # the write has begun
            assert export.poll() is None, "the export ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        export.send_signal(signal.SIGKILL)
        export.wait(timeout=60)
    assert snapshot(out) == before
    assert [p.name.startswith(".model.onnx.") for p in partial_files(tmp_path)] == [True]
