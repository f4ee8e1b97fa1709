"""``clipfuse predict``: overlays with a legend, label PNGs, labels, and one-line errors."""

import json
import shutil

import numpy as np
from helpers import require_shared
from PIL import Image

from clipfuse.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_folder_writes_overlays_and_label_maps(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    images = tiny_run.data / "images" / "val"
    code, _, err = run(
        capsys, "predict", str(images), "--model", str(tiny_run.pretrained), "--out", str(out)
    )
    assert code == 0, err
    assert "predict" in err and "4/4" in err  # the progress bar, on stderr
    for path in tiny_run.val_images:
        overlay = Image.open(out / f"{path.stem}_overlay.png")
        labels = np.asarray(Image.open(out / f"{path.stem}_labels.png"))
        assert labels.shape == (40, 48) and labels.max() < 3
        assert overlay.width > 48  # the legend sits to the right of the image
    meta = json.loads((out / "classes.json").read_text())
    assert meta["class_names"] == ["sky", "road", "car"] and meta["mode"] == "decoder"


def test_predict_with_labels_and_open_vocab(tiny_run, tmp_path, capsys):
    image = str(tiny_run.val_images[0])
    subset = tmp_path / "subset"
    code, out, err = run(
        capsys,
        "predict",
        image,
        "--model",
        str(tiny_run.checkpoint),
        "--labels",
        "car, road=street",
        "--out",
        str(subset),
    )
    assert code == 0, err
    assert "000_overlay.png" in out
    assert json.loads((subset / "classes.json").read_text())["class_names"] == ["car", "street"]
    assert np.asarray(Image.open(subset / "000_labels.png")).max() <= 1

    opened = tmp_path / "open"
    code, _, err = run(
        capsys,
        "predict",
        image,
        "--model",
        str(tiny_run.pretrained),
        "--labels",
        "sky, tree, water",
        "--open-vocab",
        "--out",
        str(opened),
    )
    assert code == 0, err
    meta = json.loads((opened / "classes.json").read_text())
    assert meta["class_names"] == ["sky", "tree", "water"] and meta["mode"] == "score_map"


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_predict_errors(tiny_run, tmp_path, capsys):
    model = str(tiny_run.pretrained)
    image = str(tiny_run.val_images[0])
    err = one_line_error(capsys, "predict", image, "--model", model, "--labels", "road, unicorn")
    assert "'unicorn'" in err and "sky, road, car" in err
    err = one_line_error(capsys, "predict", image, "--model", str(tmp_path / "nope"))
    assert "nope not found" in err
    err = one_line_error(capsys, "predict", str(tmp_path / "missing.png"), "--model", model)
    assert "missing.png not found" in err

    folder = tmp_path / "mixed"
    shutil.copytree(tiny_run.data / "images" / "val", folder)
    (folder / "001.png").write_text("not a png")
    out = tmp_path / "out"
    err = one_line_error(capsys, "predict", str(folder), "--model", model, "--out", str(out))
    assert f"1 of the 4 images could not be read, the other 3 were written to {out}" in err
    assert "001.png" in err
    assert sorted(p.name for p in out.glob("*_overlay.png")) == [
        "000_overlay.png",
        "002_overlay.png",
        "003_overlay.png",
    ]


def test_predict_on_the_shared_street_scene(tiny_run, tmp_path, capsys):
    sample = require_shared("samples/cityscapes_segmentation.bmp")
    out = tmp_path / "street"
    code, _, err = run(
        capsys, "predict", str(sample), "--model", str(tiny_run.pretrained), "--out", str(out)
    )
    assert code == 0, err
    overlay = Image.open(out / "cityscapes_segmentation_overlay.png")
    assert overlay.height == 513 and overlay.width > 513
    labels = np.asarray(Image.open(out / "cityscapes_segmentation_labels.png"))
    assert labels.shape == (513, 513)
