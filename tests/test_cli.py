"""The command line: help, train -> eval --json -> predict, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import error_line, tiny_config
from PIL import Image

from clipfuse.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clipfuse.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "predict", "data"):
        assert command in result.stdout
    for command in ("train", "eval", "predict"):
        assert "usage: clipfuse " + command in run_cli(command, "--help").stdout


@pytest.fixture
def trained_run(folder_dataset, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(folder_dataset, "convformer")))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_path), "--out", str(out)]) == 0
    return out


def test_train_eval_json_and_predict(trained_run, folder_dataset, tmp_path, capsys):
    capsys.readouterr()
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    output = tmp_path / "metrics.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--json", "--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"mIoU", "mAcc", "aAcc", "per_class"}
    assert json.loads(output.read_text())["mIoU"] == printed["mIoU"]
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert printed["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-6)

    predictions = tmp_path / "predictions"
    images = folder_dataset / "images" / "val"
    assert (
        main(["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(predictions)])
        == 0
    )
    overlay = Image.open(predictions / "000_overlay.png")
    labels = np.asarray(Image.open(predictions / "000_labels.png"))
    assert overlay.width > labels.shape[1]  # the legend sits to the right of the image
    assert labels.shape == (40, 48) and labels.max() < 3


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return error_line(capsys.readouterr().err)


def test_bad_input_gives_one_line_errors(folder_dataset, tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config = tiny_config(folder_dataset)
    config_path.write_text(yaml.safe_dump(config))
    assert "nope.yaml not found" in one_line_error(
        capsys, ["train", "--config", str(tmp_path / "nope.yaml")]
    )
    err = one_line_error(capsys, ["train", "--config", str(config_path), "model.colour=red"])
    assert "model.colour" in err
    missing = one_line_error(
        capsys, ["train", "--config", str(config_path), f"data.root={tmp_path / 'void'}"]
    )
    assert "void" in missing
    (folder_dataset / "images" / "val" / "001.png").write_bytes(b"not a png")
    err = one_line_error(
        capsys, ["train", "--config", str(config_path), "--out", str(tmp_path / "r")]
    )
    assert "001.png" in err
    assert "x.ckpt not found" in one_line_error(
        capsys, ["eval", "--checkpoint", str(tmp_path / "x.ckpt")]
    )
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(b"\x00" * 10)
    assert "fake.ckpt" in one_line_error(capsys, ["eval", "--checkpoint", str(fake)])


@pytest.mark.parametrize("defect", ["mask_size", "label_value", "empty_classes", "duplicate_class"])
def test_bad_datasets_stop_training_with_one_line(folder_dataset, tmp_path, capsys, defect):
    masks = folder_dataset / "masks" / "train"
    if defect == "mask_size":
        Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(masks / "002.png")
        expected = "002.png"
    elif defect == "label_value":
        Image.fromarray(np.full((40, 48), 7, dtype=np.uint8)).save(masks / "003.png")
        expected = "7"
    elif defect == "empty_classes":
        (folder_dataset / "classes.txt").write_text("")
        expected = "classes.txt"
    else:
        (folder_dataset / "classes.txt").write_text("sky\nroad\nsky\n")
        expected = "sky"
    config_path = tmp_path / "c.yaml"  # 4 steps of 2 over 4 training images: every image is read
    config_path.write_text(yaml.safe_dump(tiny_config(folder_dataset)))
    err = one_line_error(
        capsys, ["train", "--config", str(config_path), "--out", str(tmp_path / "r")]
    )
    assert expected in err


def test_eval_split_test(trained_run, folder_dataset, tmp_path, capsys):
    """``--split test``: the metrics of the test split (here: masks that hold only sky)."""
    for kind in ("images", "masks"):
        (folder_dataset / kind / "test").mkdir()
    for image in sorted((folder_dataset / "images" / "val").iterdir())[:2]:
        (folder_dataset / "images" / "test" / image.name).write_bytes(image.read_bytes())
        Image.fromarray(np.zeros((40, 48), dtype=np.uint8)).save(
            folder_dataset / "masks" / "test" / image.name
        )
    checkpoint = str(trained_run / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", checkpoint, "--json", "--split", "test"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", checkpoint, "--json"]) == 0
    val = json.loads(capsys.readouterr().out)
    assert (test["split"], val["split"]) == ("test", "val")
    accuracy = {
        split: {row["name"]: row["Acc"] for row in r["per_class"]}
        for split, r in (("test", test), ("val", val))
    }
    assert accuracy["test"]["road"] is None and accuracy["val"]["road"] is not None
    assert "nope" in one_line_error(capsys, ["eval", "--checkpoint", checkpoint, "--split", "nope"])
