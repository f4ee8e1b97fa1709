"""``clipfuse eval-vocab``: decoder through a label mapping, open vocabulary with seen / unseen
scores and calibrated stacking, generalized zero-shot training with held-out names."""

import json

import numpy as np
import pytest
from helpers import error_line, tiny_config, write_folder_dataset
from PIL import Image

from clipfuse import ClipfuseError
from clipfuse.cli import main
from clipfuse.inference.eval_vocab import evaluate_vocab

RENAMED = ("heaven", "street", "vehicle")  # same images and masks, other names


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_own_dataset_decoder_matches_clipfuse_eval(tiny_run, tmp_path):
    from clipfuse.engine import evaluate

    report = evaluate_vocab(tiny_run.pretrained, json_path=tmp_path / "r.json", progress=False)
    assert report["images"] == 4 and report["classes"] == ["sky", "road", "car"]
    evaluated = evaluate(tiny_run.checkpoint, quiet=True)
    assert report["decoder"]["mIoU"] == pytest.approx(evaluated["mIoU"], abs=1e-9)
    assert report["decoder"]["map"] == {"sky": "sky", "road": "road", "car": "car"}
    vocab = report["open_vocab"]
    assert vocab["path"] == "score_map" and vocab["seen"] == ["sky", "road", "car"]
    assert vocab["unseen"] == [] and vocab["hmean"] is None
    assert vocab["mIoU"] == pytest.approx(vocab["seen_mIoU"])
    assert vocab["calibrated"]["gamma"] == 0.0  # nothing unseen: no offset
    assert json.loads((tmp_path / "r.json").read_text())["open_vocab"] == vocab


def test_cli_unseen_curve_ends_with_everything_unseen(tiny_run, tmp_path, capsys):
    out = tmp_path / "vocab.json"
    code, stdout, err = run(
        capsys, "eval-vocab", "--model", tiny_run.pretrained, "--unseen", "car",
        "--gammas", "1", "1000", "--output", out, "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "calibrated (score_map" in stdout and "seen" in stdout
    vocab = json.loads(out.read_text())["open_vocab"]
    assert vocab["unseen"] == ["car"] and [p["gamma"] for p in vocab["curve"]] == [0, 1, 1000]
    last = vocab["curve"][-1]
    masks = [np.asarray(Image.open(p)) for p in (tiny_run.data / "masks" / "val").glob("*.png")]
    valid = sum(int((m != 255).sum()) for m in masks)
    car = sum(int((m == 2).sum()) for m in masks)
    assert last["seen_mIoU"] == 0 and last["unseen_mIoU"] == pytest.approx(100 * car / valid)
    assert vocab["calibrated"]["rule"].startswith("largest gamma with seen mIoU within 1.0")


def test_renamed_query_is_unseen(tiny_run, capsys):
    code, stdout, err = run(
        capsys, "eval-vocab", "--model", tiny_run.pretrained, "--names", "sky=heavens",
        "--limit", 2, "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["images"] == 2 and report["open_vocab"]["queries"] == ["heavens", "road", "car"]
    assert report["open_vocab"]["unseen"] == ["sky"]


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    from clipfuse.build import create_model_from_config
    from clipfuse.inference import ClipfuseModel

    root = tmp_path_factory.mktemp("plain")
    data = write_folder_dataset(root / "data")
    renamed = write_folder_dataset(root / "renamed", classes=RENAMED)
    config = tiny_config(data, "plain")
    names = ["sky", "road", "car"]
    model = ClipfuseModel(create_model_from_config(config, names, pretrained=False), config, names)
    return model.save_pretrained(root / "fpn"), renamed


def test_plain_model_through_a_label_mapping(plain_model):
    import clipfuse

    path, renamed = plain_model
    own = evaluate_vocab(path, progress=False)
    assert own["open_vocab"] is None
    full = ["sky=heaven", "road=street", "car=vehicle"]
    mapped = evaluate_vocab(path, "folder", renamed, mapping=full, progress=False)
    assert mapped["decoder"]["mIoU"] == pytest.approx(own["decoder"]["mIoU"])
    assert [c["name"] for c in mapped["decoder"]["per_class"]] == list(RENAMED)
    partial = evaluate_vocab(path, "folder", renamed, mapping=full[:2], progress=False)
    assert partial["decoder"]["map"] == {"sky": "heaven", "road": "street"}
    # by hand: vehicle pixels not scored, a pixel predicted car is wrong
    model = clipfuse.load(path, device="cpu")
    images = sorted((renamed / "images" / "val").glob("*.png"))
    predicted = np.stack([p.label_map for p in model.predict(images, scores=False)])
    target = np.stack([np.asarray(Image.open(renamed / "masks" / "val" / p.name)) for p in images])
    scored = (target == 0) | (target == 1)
    ious = []
    for k in (0, 1):
        hit = ((predicted == k) & (target == k) & scored).sum()
        union = (((predicted == k) | (target == k)) & scored).sum()
        ious.append(100 * hit / union if union else np.nan)
    assert partial["decoder"]["mIoU"] == pytest.approx(np.nanmean(ious))


def test_refusals(plain_model, tiny_run, capsys):
    path, renamed = plain_model
    cases = [
        (["--model", path, "--names", "sky=heavens"], "has no text"),
        (["--model", path, "--data", "folder", "--root", renamed], "give --map"),
        (["--model", path, "--map", "tree=heaven"], "model class 'tree' is unknown"),
        (["--model", path, "--map", "sky"], "expected MODEL_CLASS=DATASET_CLASS"),
        (["--model", tiny_run.pretrained, "--names", "a", "b"], "one text per dataset class"),
        (["--model", tiny_run.pretrained, "--unseen", "tree"], "--unseen: class 'tree'"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, "eval-vocab", *argv)
        assert code == 2 and message in error_line(err), (argv, err)


def test_generalized_zero_shot_training_never_sees_the_held_out_name(tmp_path):
    import clipfuse
    from clipfuse.config import apply_overrides
    from clipfuse.engine import train

    data = write_folder_dataset(tmp_path / "data")
    config = tiny_config(data, "convformer", max_steps=2, val_every=2)
    config = apply_overrides(config, ["data.dataset_kwargs={unseen: [car]}"])
    train(config, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = clipfuse.load(checkpoint, device="cpu")
    assert model.class_names == ["sky", "road"]
    assert model.segmentor.head.text_embeddings.shape[0] == 2
    report = evaluate_vocab(checkpoint, progress=False)
    assert report["classes"] == ["sky", "road", "car"]
    assert report["open_vocab"]["unseen"] == ["car"]
    assert [c["name"] for c in report["decoder"]["per_class"]] == ["sky", "road"]
    with pytest.raises(ClipfuseError, match="unseen names 'bus'"):
        clipfuse.data.create_dataset("folder", "val", root=data, unseen=["bus"])
