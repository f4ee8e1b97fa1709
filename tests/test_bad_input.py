"""The bad-input and fault matrix (issue 14): each case gives the correct result, or exit code 2
with one line on stderr and no traceback, and leaves the files written earlier unchanged.

One tiny FPN run (2 steps on 32x32 crops) is trained once for the module; cases that change a
run work on a copy of it.
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from helpers import refused, tiny_config, write_folder_dataset
from PIL import Image

import clipfuse
from clipfuse.cli import main
from clipfuse.config import load_config
from clipfuse.engine import train
from clipfuse.errors import ClipfuseError

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only folders


class CountValidations(L.Callback):
    def __init__(self) -> None:
        self.count = 0

    def on_validation_end(self, trainer, module) -> None:
        self.count += 1


@dataclass(frozen=True)
class World:
    data: Path
    config: Path  # the run's config as a YAML file
    run: Path
    validations: int

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("matrix")
    data = write_folder_dataset(root / "data")
    config = tiny_config(data, max_steps=2, val_every=2, checkpoint_every=2)
    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    counter = CountValidations()
    train(config, root / "run", callbacks=[counter])
    return World(data, config_path, root / "run", counter.count)


@pytest.fixture(scope="module")
def model(world):
    return clipfuse.load(world.checkpoint, device="cpu")


@pytest.fixture
def run_copy(world, tmp_path) -> Path:
    return Path(shutil.copytree(world.run, tmp_path / "run"))


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` -> SHA-256 of its bytes."""
    files = {}
    for folder in folders:
        paths = (
            [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        )
        for path in paths:
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# -- 1. one training per run folder ------------------------------------------------------------


def test_second_training_into_a_busy_folder_is_refused_naming_the_first(world, tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "clipfuse.cli", "train", "--config", str(world.config)]
        + ["--out", str(out), "train.max_steps=100000", "train.val_every=100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "config.yaml").is_file():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first training did not start"
            time.sleep(0.2)
        before = snapshot(out / "config.yaml")
        err = refused(
            capsys,
            ["train", "--config", str(world.config), "--out", str(out)],
            "in use by another training",
            f"pid {first.pid}",
        )
        assert "--out" in err
        assert snapshot(out / "config.yaml") == before  # still the first run's config
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        first.stderr.close()
    from clipfuse.engine.lock import RunLock

    with RunLock(out):  # kill -9 leaves no stale lock: the kernel released it
        pass


def test_a_run_that_died_before_its_first_checkpoint_is_not_replaced(world, run_copy, capsys):
    shutil.rmtree(run_copy / "checkpoints")
    before = snapshot(run_copy)
    refused(
        capsys,
        ["train", "--config", str(world.config), "--out", str(run_copy)],
        "stopped before its first checkpoint",
        "--resume",
    )
    assert snapshot(run_copy) == before


def test_a_finished_run_is_not_replaced(world, run_copy, capsys):
    before = snapshot(run_copy)
    refused(
        capsys,
        ["train", "--config", str(world.config), "--out", str(run_copy)],
        "already holds a run",
    )
    assert snapshot(run_copy) == before


def test_validation_runs_once_when_val_every_equals_max_steps(world):
    assert world.validations == 1


# -- 3. resume with changed settings -------------------------------------------------------------


def test_resume_applies_safe_changes_says_so_and_cleans_partial_files(run_copy, capsys):
    leftover = run_copy / "checkpoints" / ".last.ckpt.x1y2z3.partial.ckpt"  # a killed write
    leftover.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    assert main(["train", "--out", str(run_copy), "--resume", "train.max_steps=4"]) == 0
    out = capsys.readouterr().err
    assert "train.max_steps 2 -> 4" in out
    assert torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert load_config(run_copy / "config.yaml")["train"]["max_steps"] == 4
    assert not leftover.exists()
    assert not list((run_copy / "checkpoints").glob("last-v*.ckpt"))


def test_resume_refuses_other_changes_listing_them(world, run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    refused(
        capsys,
        ["train", "--out", str(run_copy), "--resume", "data.batch_size=4", "train.lr=0.5"],
        "data.batch_size (2 -> 4)",
        "train.lr (0.001 -> 0.5)",
        "train.max_steps",  # what may change
    )
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(world.config.read_text()), "seed": 7}))
    refused(
        capsys,
        ["train", "--out", str(run_copy), "--resume", "--config", str(other)],
        "seed (0 -> 7)",
    )
    assert snapshot(run_copy) == before


# -- 6 and 9. damaged and foreign checkpoints ----------------------------------------------------


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoint(kind: str, good: Path, path: Path) -> str:
    """Write a damaged checkpoint of ``kind`` to ``path``; the expected error fragment."""
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
        return "is empty (0 bytes)"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
        return "truncated or damaged"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return "is not a PyTorch checkpoint"
    if kind == "malicious":
        torch.save({"payload": _Exploit(path.parent / "pwned")}, path)
        return "plain data: refused (loading it could run code"
    checkpoint = torch.load(good, weights_only=True)
    if kind == "version99":
        checkpoint["clipfuse"]["format_version"] = 99
        torch.save(checkpoint, path)
        return "format version 99"
    if kind == "misfit":
        config = checkpoint["clipfuse"]["config"]
        config["model"]["decoder_kwargs"] = {"channels": 24}
        torch.save(checkpoint, path)
        return "does not fit its config"
    assert kind == "foreign"
    torch.save({"state_dict": checkpoint["state_dict"]}, path)
    return "was not written by clipfuse"


KINDS = ["empty", "truncated", "random", "malicious", "version99", "misfit", "foreign"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoints_give_one_line_everywhere(world, tmp_path, capsys, kind):
    bad = tmp_path / "bad.ckpt"
    fragment = _bad_checkpoint(kind, world.checkpoint, bad)
    image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
    for argv in (
        ["eval", "--checkpoint", str(bad)],
        ["predict", image, "--model", str(bad), "--out", str(tmp_path / "predictions")],
        ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")],
    ):
        err = refused(capsys, argv, str(bad), fragment)
        assert "weights_only" not in err
    assert not (tmp_path / "pwned").exists()  # the payload never ran
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "predictions").exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "malicious", "version99"])
def test_resume_on_a_damaged_last_checkpoint_is_one_line(run_copy, capsys, kind):
    last = run_copy / "checkpoints" / "last.ckpt"
    good = run_copy.parent / "good.ckpt"
    shutil.copy(last, good)
    fragment = _bad_checkpoint(kind, good, last)
    before = snapshot(run_copy)
    err = refused(capsys, ["train", "--out", str(run_copy), "--resume"], fragment)
    assert "weights_only" not in err
    after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if "/logs/" not in k} == {
        k: v for k, v in before.items() if "/logs/" not in k
    }
    assert not (run_copy / "checkpoints" / "pwned").exists()


# -- 4, 8. atomic writes ------------------------------------------------------------------------


def test_checkpoint_write_is_atomic_next_to_the_target(world, tmp_path, monkeypatch):
    from clipfuse.engine.checkpoint_io import AtomicCheckpointIO
    from clipfuse.fileio import partial_files

    io_plugin = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin.save_checkpoint({"step": 1}, target)
    before = snapshot(target)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # $TMPDIR must not be used

    def killed(obj, file):  # half a file written, then the process is interrupted
        file.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        io_plugin.save_checkpoint({"step": 2}, target)
    assert snapshot(target) == before
    assert not partial_files(target.parent) and not list(scratch.iterdir())


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
        [sys.executable, "-m", "clipfuse.cli", "export", "--checkpoint", str(world.checkpoint)]
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


# -- 5. file-system errors ----------------------------------------------------------------------


def test_output_paths_that_cannot_be_written_are_one_line(world, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    ckpt = str(world.checkpoint)
    image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
    cases = [
        (["export", "--checkpoint", ckpt, "--out", str(folder)], "is a folder"),
        (["export", "--checkpoint", ckpt, "--out", str(a_file / "m.onnx")], "is a file"),
        (["predict", image, "--model", ckpt, "--out", str(a_file)], "is a file"),
        (["predict", image, "--model", ckpt, "--out", str(a_file / "sub")], "is a file"),
        (["train", "--config", str(world.config), "--out", str(a_file)], "is a file"),
        (["train", "--config", str(world.config), "--out", str(a_file / "run")], "is a file"),
        (["eval", "--checkpoint", ckpt, "--output", str(folder)], "is a folder"),
        (["eval", "--checkpoint", ckpt, "--output", str(a_file / "m.json")], "is a file"),
    ]
    for argv, fragment in cases:
        refused(capsys, argv, str(a_file if "a_file" in argv[-1] else folder), fragment)
    assert a_file.read_text() == "keep me\n" and not list(folder.iterdir())


def test_read_only_folders_are_one_line(world, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "read-only"  # holds a copy of the run, e.g. a shared model folder
    shutil.copytree(world.run / "checkpoints", locked / "checkpoints")
    before = snapshot(locked)
    if ROOT_USER:  # root ignores permissions: refuse the write where the OS would
        real = tempfile.TemporaryFile

        def denied(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).is_relative_to(locked):
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    else:
        locked.chmod(0o555)
    try:
        ckpt = str(locked / "checkpoints" / "last.ckpt")
        image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
        for argv in (
            ["export", "--checkpoint", ckpt, "--out", str(locked / "m.onnx")],
            ["predict", image, "--model", ckpt, "--out", str(locked)],
            ["train", "--config", str(world.config), "--out", str(locked)],
            ["eval", "--checkpoint", ckpt],  # its logs would go to read-only/eval
        ):
            refused(capsys, argv, str(locked), "permission denied")
    finally:
        locked.chmod(0o755)
    assert snapshot(locked) == before
    assert {p.name for p in locked.iterdir()} <= {"checkpoints", "eval"}


# -- 2. 16-bit images -----------------------------------------------------------------------------


def test_16_bit_greyscale_is_segmented_like_its_8_bit_version(world, model, tmp_path, capsys):
    from clipfuse.inference.serve import predict_upload

    rgb = np.asarray(Image.open(sorted((world.data / "images" / "val").glob("*.png"))[0]))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    wide = grey.astype(np.uint16) * 257  # the same intensities on 16 bits
    eight = save_png(tmp_path / "in" / "eight.png", grey)
    sixteen = save_png(tmp_path / "in" / "sixteen.png", wide)
    assert Image.open(sixteen).mode.startswith("I")

    expected = model.predict(eight, scores=False)
    assert expected.image.min() < 200  # not saturated to white
    for same in (sixteen, wide):  # the API on the file, and on the uint16 array
        result = model.predict(same, scores=False)
        assert np.array_equal(result.image, expected.image)
        assert np.array_equal(result.label_map, expected.label_map)

    out = tmp_path / "out"
    assert main(["predict", str(eight), str(sixteen), "--model", str(world.checkpoint)]
                + ["--out", str(out)]) == 0  # fmt: skip
    for kind in ("overlay", "labels"):  # the overlay shows the image: it must be the same
        pair = [np.asarray(Image.open(out / f"{n}_{kind}.png")) for n in ("eight", "sixteen")]
        assert np.array_equal(pair[0], pair[1])

    answers = [predict_upload(model, path.read_bytes()) for path in (eight, sixteen)]
    assert answers[0] == answers[1]  # the web page: same overlay, same areas


def test_float_images_are_refused_consistently(model, tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((32, 32), np.float32)).save(path)
    with pytest.raises(ClipfuseError, match="floating-point"):
        model.predict(path)
    with pytest.raises(ClipfuseError, match="dtype float32"):
        model.predict(np.zeros((32, 32), np.float32))


# -- 7. mapping overrides -------------------------------------------------------------------------


def test_mapping_overrides_replace_and_null_or_empty_clear(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"method": "convformer", "head_kwargs": {"dim": 32, "heads": 2}},
                "text": {"aliases": {"Pavement": "sidewalk", "Pedestrian": "person"}},
            }
        )
    )
    assert len(load_config(path)["text"]["aliases"]) == 2
    assert load_config(path, ["text.aliases={}"])["text"]["aliases"] == {}
    assert load_config(path, ["text.aliases=null"])["text"]["aliases"] == {}
    assert load_config(path, ["text.aliases={Car: auto}"])["text"]["aliases"] == {"Car": "auto"}
    kept = load_config(path, ["model.head_kwargs.dim=8"])["model"]["head_kwargs"]
    assert kept == {"dim": 8, "heads": 2}  # a dotted key sets one entry, keeps the others
    with pytest.raises(ClipfuseError, match="must be a mapping or null"):
        load_config(path, ["text.aliases=5"])


def test_cleared_aliases_reach_the_runs_config(world, tmp_path):
    config = tiny_config(world.data, max_steps=1, val_every=1)
    config["text"]["aliases"] = {"sky": "heaven"}
    train(config, tmp_path / "run", overrides=["text.aliases={}"])
    assert load_config(tmp_path / "run" / "config.yaml")["text"]["aliases"] == {}


# -- 9. datasets validated up front ----------------------------------------------------------


def test_every_bad_file_is_listed_before_training(world, tmp_path, capsys):
    data = Path(shutil.copytree(world.data, tmp_path / "data"))
    train_images, train_masks = data / "images" / "train", data / "masks" / "train"
    (train_images / "001.png").write_bytes(b"not a png")
    save_png(train_masks / "002.png", np.zeros((40, 48, 3), np.uint8))  # RGB, not labels
    save_png(train_masks / "003.png", np.zeros((10, 10), np.uint8))  # wrong size
    out = tmp_path / "run"
    refused(
        capsys,
        ["train", "--config", str(world.config), "--out", str(out), f"data.root={data}"],
        "3 of 4 samples are bad",
        "001.png could not be read",
        "002.png has mode RGB",
        "003.png is 10x10",
    )
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()


def test_a_mask_without_an_image_is_an_error(world, tmp_path, capsys):
    data = Path(shutil.copytree(world.data, tmp_path / "data"))
    save_png(data / "masks" / "train" / "999.png", np.zeros((40, 48), np.uint8))
    refused(
        capsys,
        ["train", "--config", str(world.config), "--out", str(tmp_path / "r"), f"data.root={data}"],
        "999.png has no image",
    )


# -- 9. serve, uploads, labels ------------------------------------------------------------------


def test_serve_on_a_busy_port_fails_before_announcing(world, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        capsys.readouterr()
        assert main(["serve", "--model", str(world.checkpoint), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: cannot serve on 127.0.0.1:{port}: ")
    assert captured.err.count("\n") == 1 and "--port" in captured.err
    assert "serving" not in captured.out


def test_an_oversized_streamed_upload_does_not_claim_a_size(model):
    from clipfuse.inference.serve import UploadError, decode_upload

    with pytest.raises(UploadError) as error:
        decode_upload(b"x" * 21_000_001, 4096 * 4096, 21_000_000)
    assert str(error.value) == "the file is larger than the limit of 21.0 MB (21,000,000 bytes)"


def test_an_oversized_declared_upload_gives_both_sizes_exactly(model):
    from fastapi.testclient import TestClient

    from clipfuse.inference.serve import create_app

    client = TestClient(create_app(model, max_bytes=20 * 1024 * 1024))
    length = 20 * 1024 * 1024 + 64 * 1024 + 1  # rounds to 21.0 MB, as the limit does
    answer = client.post("/api/predict", content=b"x" * length)
    assert answer.status_code == 413
    assert answer.json()["error"] == (
        "the upload is 21.0 MB (21,037,057 bytes): the limit is 21.0 MB (20,971,520 bytes)"
    )


def test_empty_labels_on_the_command_line_do_not_speak_python(world, tmp_path, capsys):
    image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
    err = refused(
        capsys,
        ["predict", image, "--model", str(world.checkpoint), "--labels", ",", "--out",
         str(tmp_path / "p")],
        "labels: none given",
    )  # fmt: skip
    assert "None" not in err
