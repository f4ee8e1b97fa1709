"""The command line: help, train -> eval --json -> predict, and one-line errors for bad input."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import error_line, tiny_config
from PIL import Image

from clipfuse.analysis import evaluation_size
from clipfuse.cli import build_parser, main
from clipfuse.cli.options import split_overrides
from clipfuse.config import apply_overrides, load_config


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
    assert main(["eval", "--model", str(checkpoint), "--json", "--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"mIoU", "mAcc", "aAcc", "per_class"}
    assert json.loads(output.read_text())["mIoU"] == printed["mIoU"]
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert printed["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-6)

    predictions = tmp_path / "predictions"
    images = folder_dataset / "images" / "val"
    assert (
        main(["predict", str(images), "--model", str(checkpoint), "--out", str(predictions)]) == 0
    )
    overlay = Image.open(predictions / "000_overlay.png")
    labels = np.asarray(Image.open(predictions / "000_labels.png"))
    assert overlay.width > labels.shape[1]  # the legend sits to the right of the image
    assert labels.shape == (40, 48) and labels.max() < 3


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return error_line(capsys.readouterr().err)


def test_bad_input_gives_one_line_errors(folder_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the refused runs without --out leave no folder behind
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
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    (folder_dataset / "images" / "val" / "001.png").write_bytes(b"not a png")
    err = one_line_error(
        capsys, ["train", "--config", str(config_path), "--out", str(tmp_path / "r")]
    )
    assert "001.png" in err
    assert "x.ckpt not found" in one_line_error(
        capsys, ["eval", "--model", str(tmp_path / "x.ckpt")]
    )
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(b"\x00" * 10)
    assert "fake.ckpt" in one_line_error(capsys, ["eval", "--model", str(fake)])


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
    assert main(["eval", "--model", checkpoint, "--json", "--split", "test"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", checkpoint, "--json"]) == 0
    val = json.loads(capsys.readouterr().out)
    assert (test["split"], val["split"]) == ("test", "val")
    accuracy = {
        split: {row["name"]: row["Acc"] for row in r["per_class"]}
        for split, r in (("test", test), ("val", val))
    }
    assert accuracy["test"]["road"] is None and accuracy["val"]["road"] is not None
    assert "nope" in one_line_error(capsys, ["eval", "--model", checkpoint, "--split", "nope"])


MODEL_COMMANDS = ("eval", "eval-vocab", "predict", "serve", "export")
CONFIG_COMMANDS = ("train", "flops", "bench", "print-config")
DEVICE_COMMANDS = ("eval", "eval-vocab", "predict", "serve", "bench")


def command_help(capsys, command: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # as one line, wherever argparse wraps


def test_every_command_spells_an_option_the_same_way(capsys):
    """One name per concept: --model, --config, --device, positional KEY=VALUE overrides; the
    old names (--checkpoint, --configs, bench's --set) appear in no help."""
    helps = {c: command_help(capsys, c) for c in {*MODEL_COMMANDS, *CONFIG_COMMANDS}}
    for command, text in helps.items():
        assert "--checkpoint" not in text and "--configs" not in text and "--set" not in text
        assert ("--model MODEL" in text) == (command in MODEL_COMMANDS), command
        assert ("--config CONFIG" in text) == (command in CONFIG_COMMANDS), command
        assert ("--device DEVICE" in text) == (command in DEVICE_COMMANDS), command
    for command in ("train", "eval", "flops", "bench", "print-config"):
        assert "[KEY=VALUE ...]" in helps[command], command
    assert "evaluation size" in helps["flops"] and "evaluation size" in helps["bench"]


def test_old_option_names_still_parse_and_device_defaults_to_auto():
    parser = build_parser()
    for command in ("eval", "export --out m.onnx", "predict x.png"):
        old = parser.parse_args([*command.split(), "--checkpoint", "run/last.ckpt"])
        assert old.model == "run/last.ckpt"
    bench = parser.parse_args(["bench", "--configs", "a.yaml", "b", "train.lr=0.1"])
    assert (bench.config, bench.overrides) == (["a.yaml", "b", "train.lr=0.1"], [])
    assert split_overrides(bench.config) == (["a.yaml", "b"], ["train.lr=0.1"])
    for command in DEVICE_COMMANDS:
        argv = {"predict": ["predict", "x.png"], "bench": ["bench", "--config", "a"]}.get(
            command, [command]
        )
        given = "--config" if command == "bench" else "--model"
        argv = argv if given in argv else [*argv, given, "m"]
        assert parser.parse_args(argv).device == "auto"
        assert parser.parse_args([*argv, "--device", "cpu"]).device == "cpu"


def test_misspelled_option_or_command_suggests_the_closest_in_one_line(capsys):
    for argv, expected in (
        (["eval", "--modle", "x.ckpt"], "did you mean --model?"),
        (["bench", "--config", "a.yaml", "--devce", "cpu"], "did you mean --device?"),
        (["trian", "--config", "a.yaml"], "did you mean train?"),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2
        line = error_line(capsys.readouterr().err)
        assert expected in line and "--checkpoint" not in line


def test_evaluation_size_follows_how_evaluation_sizes_images(folder_dataset, tmp_path, capsys):
    config = tiny_config(folder_dataset)  # 32x32 crops, validated at full resolution
    assert evaluation_size(config) == (32, 32)
    assert evaluation_size(apply_overrides(config, ["data.val_size=[40, 48]"])) == (40, 48)
    assert evaluation_size(apply_overrides(config, ["data.val_size=64"])) == (64, 64)
    slide = ["eval.mode=slide", "eval.crop_size=[24, 40]", "eval.stride=[16, 16]"]
    assert evaluation_size(apply_overrides(config, slide)) == (24, 40)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["flops", "--config", str(path), "--json", "data.val_size=[40, 48]"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [40, 48]


def test_print_config_prints_the_config_that_runs(folder_dataset, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": {"method": "plain"}, "data": {"dataset": "folder"}}))
    capsys.readouterr()
    assert main(["print-config", "--config", str(path), "train.max_steps=7"]) == 0
    printed = capsys.readouterr().out
    expected = load_config(path, ["train.max_steps=7"])
    assert yaml.safe_load(printed) == expected and expected["train"]["max_steps"] == 7
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    assert load_config(again) == expected
    assert "did you mean 'train.max_steps'?" in one_line_error(
        capsys, ["print-config", "--config", str(path), "train.max_step=7"]
    )


def test_runs_without_out_get_their_own_folders(folder_dataset, tmp_path, monkeypatch, capsys):
    """Two trainings of one config without --out: two folders runs/<config>-<time>[-N]."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(folder_dataset, max_steps=1, val_every=1)))
    capsys.readouterr()
    for _ in range(2):
        assert main(["train", "--config", str(path)]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "note: run folder" in line]
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2 and len(said) == 2
    for folder in folders:
        assert re.fullmatch(r"tiny-\d{8}-\d{6}(-\d+)?", folder.name), folder.name
        assert (folder / "config.yaml").is_file() and (folder / "metrics.json").is_file()
    assert "needs --out" in one_line_error(capsys, ["train", "--resume"])


def test_a_closed_stdout_is_no_traceback():
    """``clipfuse configs | head``: the reader went away before the listing was written."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "clipfuse.cli", "configs"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr and result.returncode == 141, result.stderr
