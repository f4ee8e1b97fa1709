"""A predictions folder is reused only by the same model and labels (issue 24): its
``classes.json`` must keep describing every label map in it, and nothing is deleted."""

import hashlib
import json
import shutil

import pytest
import torch
from helpers import error_line

import clipfuse
from clipfuse.cli import main
from clipfuse.errors import ClipfuseError
from clipfuse.inference.files import predict_to_folder


def snapshot(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def predict(capsys, images, model, out, *flags) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["predict", *map(str, images), "--model", str(model), "--out", str(out), *flags])
    return code, capsys.readouterr().err


def test_the_same_model_and_labels_add_to_the_folder_and_say_so(tiny_run, tmp_path, capsys):
    out = tmp_path / "predictions"
    first, second = tiny_run.val_images[:2], tiny_run.val_images[2:]
    assert predict(capsys, first, tiny_run.checkpoint, out)[0] == 0
    manifest = json.loads((out / "classes.json").read_text())
    # The pretrained folder holds the checkpoint's weights: the same model.
    code, err = predict(capsys, second, tiny_run.pretrained, out)
    assert code == 0, err
    assert "note: " in err and "2 prediction(s) of this model and these labels" in err
    stems = sorted(p.name.removesuffix("_labels.png") for p in out.glob("*_labels.png"))
    assert stems == [p.stem for p in tiny_run.val_images]
    again = json.loads((out / "classes.json").read_text())
    assert again["model_sha256"] == manifest["model_sha256"]
    assert again["class_names"] == ["sky", "road", "car"] and again["mode"] == "decoder"


def test_other_labels_or_mode_are_refused_and_nothing_is_deleted(tiny_run, tmp_path, capsys):
    out = tmp_path / "predictions"
    images = tiny_run.val_images[:1]
    assert predict(capsys, images, tiny_run.pretrained, out)[0] == 0
    before = snapshot(out)
    for flags, differ in [
        (["--labels", "car, road=street"], "class names, colours differ"),
        (["--labels", "sky, road, car", "--open-vocab"], "mode differs from"),
    ]:
        code, err = predict(capsys, images, tiny_run.pretrained, out, *flags)
        assert code == 2
        line = error_line(err)
        assert f"predictions folder {out} holds 1 label map(s) of another prediction" in line
        assert differ in line and "choose another --out" in line
        assert snapshot(out) == before


def test_another_models_predictions_are_refused(tiny_run, tmp_path):
    out = tmp_path / "predictions"
    images = tiny_run.val_images[:2]
    predict_to_folder(clipfuse.load(tiny_run.pretrained, device="cpu"), images, out)
    before = snapshot(out)
    other = clipfuse.load(tiny_run.pretrained, device="cpu")  # then trained a little further
    with torch.no_grad():
        next(other.segmentor.parameters()).add_(1e-3)
    with pytest.raises(ClipfuseError, match=r"holds 2 label map\(s\) .*\(model differs from"):
        predict_to_folder(other, images, out)
    assert snapshot(out) == before


def test_label_maps_without_classes_json_are_refused(tiny_run, tmp_path, capsys):
    out = tmp_path / "predictions"
    assert predict(capsys, tiny_run.val_images[:1], tiny_run.pretrained, out)[0] == 0
    (out / "classes.json").unlink()
    shutil.copy(out / "000_labels.png", out / "old_labels.png")
    before = snapshot(out)
    code, err = predict(capsys, tiny_run.val_images[:1], tiny_run.pretrained, out)
    assert code == 2
    assert "holds 2 label map(s) but no classes.json (their classes are unknown)" in error_line(err)
    assert snapshot(out) == before


def test_classes_json_is_written_before_the_label_maps(tiny_run, tmp_path, monkeypatch):
    from clipfuse.inference import files

    out = tmp_path / "predictions"
    order = []
    real = files.atomic_write

    def recording(path, write):
        order.append(path.name)
        return real(path, write)

    monkeypatch.setattr(files, "atomic_write", recording)
    monkeypatch.setattr(
        files, "atomic_write_text", lambda path, text: recording(path, lambda t: t.write_text(text))
    )
    predict_to_folder(clipfuse.load(tiny_run.pretrained, device="cpu"), tiny_run.val_images, out)
    assert order[0] == "classes.json" and len(order) == 1 + 2 * len(tiny_run.val_images)


def test_a_run_that_reads_no_image_writes_nothing(tiny_run, tmp_path, capsys):
    out = tmp_path / "predictions"
    unreadable = tmp_path / "broken.png"
    unreadable.write_text("not a png")
    code, err = predict(capsys, [unreadable], tiny_run.pretrained, out)
    assert code == 2 and "error: the image could not be read, nothing was written to" in err
    assert list(out.iterdir()) == []
    other = tmp_path / "broken2.png"
    other.write_text("not a png either")
    code, err = predict(capsys, [unreadable, other], tiny_run.pretrained, out)
    assert code == 2 and "error: none of the 2 images could be read, nothing was written" in err
    assert "(and 1 more)" in err and list(out.iterdir()) == []
    code, err = predict(capsys, [unreadable, tiny_run.val_images[0]], tiny_run.pretrained, out)
    assert code == 2
    assert f"error: 1 of the 2 images could not be read, the other one was written to {out}" in err
