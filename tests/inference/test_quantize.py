"""``clipfuse export --quantize int8`` and ``clipfuse eval`` of an exported ONNX file."""

import json

import numpy as np
import onnx
import pytest
from helpers import tiny_config, write_folder_dataset
from PIL import Image

from clipfuse.build import load_model
from clipfuse.cli import main
from clipfuse.config import apply_overrides
from clipfuse.engine import evaluate, train
from clipfuse.errors import ClipfuseError
from clipfuse.inference.export import OnnxSegmentor, export_checkpoint
from clipfuse.inference.pretrained import ClipfuseModel
from clipfuse.inference.quantize import calibration_images
from clipfuse.saved_model import load_checkpoint

SIZE = ["data.val_size=[64, 64]"]  # a multiple of 32: there the graph is the model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny Conv-Former trained a few steps, exported fp32 + int8 through the CLI."""
    root = tmp_path_factory.mktemp("quantize")
    data = write_folder_dataset(root / "data", size=(64, 64))
    train(tiny_config(data, "convformer", max_steps=8, threads=1), root / "run")
    checkpoint = root / "run" / "checkpoints" / "last.ckpt"
    out = root / "model.onnx"
    argv = ["export", "--model", str(checkpoint), "--out", str(out), "--size", "64", "64"]
    assert (
        main([*argv, "--exporter", "torchscript", "--quantize", "int8", "--calibration", "2"]) == 0
    )
    return checkpoint, out, root / "model.int8.onnx", data


def test_int8_is_smaller_and_agrees_with_fp32(exported):
    checkpoint, fp32, int8, data = exported
    assert int8.stat().st_size < fp32.stat().st_size
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    config, _, _ = load_checkpoint(checkpoint)
    images = np.concatenate(calibration_images(config, *_normalisation(fp32), count=4))
    reference = OnnxSegmentor(fp32, threads=1).logits(images).argmax(1)
    quantized = OnnxSegmentor(int8, threads=1)
    assert quantized.class_names == OnnxSegmentor(fp32).class_names
    assert (quantized.logits(images).argmax(1) == reference).mean() >= 0.75


def _normalisation(path):
    runner = OnnxSegmentor(path, threads=1)
    return runner.mean, runner.std


def test_eval_of_the_onnx_file_matches_eval_of_the_checkpoint(exported, tmp_path, capsys):
    checkpoint, fp32, int8, _ = exported
    # fp32 both: the ONNX file computes in fp32, eval.precision auto would be bf16 on a CPU with it
    saved = evaluate(checkpoint, [*SIZE, "eval.precision=32-true"], quiet=True)
    assert (
        main(
            [
                "eval",
                "--model",
                str(fp32),
                "--json",
                "--output",
                str(tmp_path / "m.json"),
                *SIZE,
            ]
        )
        == 0
    )
    onnx_results = json.loads(capsys.readouterr().out)
    assert onnx_results["mIoU"] == pytest.approx(saved["mIoU"], abs=0.5)
    assert [row["name"] for row in onnx_results["per_class"]] == [
        row["name"] for row in saved["per_class"]
    ]
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(
        saved["mIoU"], abs=0.5
    )
    assert 0 <= evaluate(int8, SIZE, quiet=True)["mIoU"] <= 100


def test_a_foreign_onnx_file_is_refused(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    for bad in (path, tmp_path / "missing.onnx"):
        with pytest.raises(ClipfuseError) as error:
            evaluate(bad)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("count", [0, -1])
def test_bad_calibration_counts_are_refused(exported, tmp_path, count):
    with pytest.raises(ClipfuseError, match="calibration") as error:
        export_checkpoint(exported[0], tmp_path / "m.onnx", quantize="int8", calibration=count)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "m.onnx").exists()


def test_a_missing_dataset_is_refused(exported, tmp_path):
    config, _, _ = load_checkpoint(exported[0])
    config["data"]["root"] = str(tmp_path / "nowhere")
    with pytest.raises(ClipfuseError) as error:
        calibration_images(config, [0, 0, 0], [1, 1, 1], 2)
    assert "\n" not in str(error.value)


def test_predict_runs_the_exported_files_as_the_checkpoint_predicts(exported, tmp_path, capsys):
    import clipfuse

    checkpoint, fp32, int8, data = exported
    images = sorted((data / "images" / "val").iterdir())[:2]
    loaded = load_model(checkpoint)  # predicted in fp32, as the fp32 ONNX file computes
    config = apply_overrides(loaded.config, ["eval.precision=32-true"])
    reference = ClipfuseModel(loaded.segmentor, config, loaded.class_names, device="cpu")
    for path, name in ((fp32, "ort-fp32"), (int8, "ort-int8")):
        model = clipfuse.load(path)
        assert model.inference_path == name and model.class_names == reference.class_names
        out = tmp_path / name
        assert main(["predict", *map(str, images), "--model", str(path), "--out", str(out)]) == 0
        speed = capsys.readouterr().out.strip().splitlines()[-1]
        assert f"frames/s in predict (cpu, {name})" in speed
        manifest = json.loads((out / "classes.json").read_text())
        assert manifest["model_source"] == str(path) and len(manifest["model_sha256"]) == 64
        if name == "ort-fp32":
            for image in images:
                expected = reference.predict(str(image), scores=False).label_map
                written = np.asarray(Image.open(out / f"{image.stem}_labels.png"))
                assert (written == expected).mean() >= 0.99
    with pytest.raises(ClipfuseError, match="vocabulary baked in: open vocabulary needs the"):
        clipfuse.load(int8).predict(str(images[0]), labels="sky", open_vocab=True)
    assert main(["predict", str(images[0]), "--model", str(int8), "--device", "cuda"]) == 2
    assert "runs on onnxruntime's CPU" in capsys.readouterr().err
