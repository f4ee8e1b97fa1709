"""A run that fails says so (issue 24): a diverged loss, SIGTERM and Ctrl-C, a full disk, an
interrupted save_pretrained and a resume from a checkpoint that is not the run's each end with
a non-zero exit status and one line on stderr, and keep what was written before.

One tiny FPN run (2 steps, a checkpoint at step 2) is trained once for the module; cases that
change a run work on a copy of it.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from helpers import FullDisk, last_error_line, tiny_config, write_folder_dataset
from helpers import refused as refused_with

import clipfuse
from clipfuse.cli import main
from clipfuse.engine import train
from clipfuse.engine.stops import TrainingDiverged, TrainingInterrupted
from clipfuse.errors import ClipfuseError
from clipfuse.fileio import partial_files


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("faults") / "data")


@pytest.fixture(scope="module")
def finished_run(data) -> Path:
    out = data.parent / "run"
    train(tiny_config(data, max_steps=2, val_every=2, checkpoint_every=2), out)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved_step(out: Path) -> int:
    return torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def all_finite(out: Path) -> bool:
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def refused(capsys, argv: list[str], *fragments: str) -> str:
    return refused_with(capsys, argv, *fragments, read=last_error_line)


# -- 1. divergence -------------------------------------------------------------------------------


class Poison(L.Callback):
    """Makes one weight NaN at the start of a step (so that step's loss is NaN), or inf at the
    end of one (so the weights about to be checkpointed are not finite)."""

    def __init__(self, step: int, when: str) -> None:
        self.step, self.when = step, when

    def _poison(self, trainer, module, value: float) -> None:
        weight = next(module.parameters())
        with torch.no_grad():
            weight[(0,) * weight.ndim] = value

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.when == "loss" and trainer.global_step + 1 == self.step:
            self._poison(trainer, module, float("nan"))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.when == "weights" and trainer.global_step == self.step:
            self._poison(trainer, module, float("inf"))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(data, max_steps=8, val_every=8, checkpoint_every=2)
    with pytest.raises(TrainingDiverged) as stopped:
        train(config, out, callbacks=[Poison(step=3, when="loss")])
    message = str(stopped.value)
    assert message.startswith("training diverged at step 3: the loss is nan;")
    assert f"{out / 'checkpoints' / 'last.ckpt'} keeps step 2, the last finite one" in message
    assert stopped.value.exit_code == 2
    assert saved_step(out) == 2 and all_finite(out)  # not overwritten after fit
    assert not (out / "metrics.json").exists()  # no validation of the diverged weights


def test_non_finite_weights_are_never_checkpointed(data, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(data, max_steps=8, val_every=8, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"at step 4: 1 weight tensors are not finite"):
        train(config, out, callbacks=[Poison(step=4, when="weights")])
    assert saved_step(out) == 2 and all_finite(out)
    assert not partial_files(out / "checkpoints")


def test_a_diverging_learning_rate_fails_on_the_command_line(data, tmp_path, capsys):
    out = tmp_path / "div"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, max_steps=20, checkpoint_every=1)))
    err = refused(
        capsys,
        ["train", "--config", str(config), "train.lr=1000000.0", "--out", str(out)],
        "training diverged at step ",
        "lower train.lr",
    )
    assert re.search(r"at step \d+: (the loss is nan|\d+ weight tensors are not finite)", err)
    assert not (out / "metrics.json").exists()
    if (out / "checkpoints" / "last.ckpt").exists():
        assert all_finite(out)


# -- 2. SIGTERM and Ctrl-C -----------------------------------------------------------------------


def _start_training(config: Path, out: Path, log: Path) -> subprocess.Popen:
    """``clipfuse train`` in its own process group (as a terminal runs it), stdout and stderr
    to ``log`` and ``log.err``; Ctrl-C is not ignored even when the tests run in the
    background."""
    with log.open("w") as stdout, log.with_suffix(".err").open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "clipfuse.cli", "train", "--config", str(config)]
            + ["--out", str(out)],
            stdout=stdout,
            stderr=stderr,
            process_group=0,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _wait_for_step(process: subprocess.Popen, log: Path, step: int) -> None:
    deadline = time.monotonic() + 300
    while not re.search(rf"^step {step}/", log.read_text(), re.MULTILINE):
        assert process.poll() is None, log.with_suffix(".err").read_text()
        assert time.monotonic() < deadline, "the training did not get going"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "signum, to_group, workers",
    [
        (signal.SIGTERM, False, 0),  # kill <pid>
        (signal.SIGTERM, True, 1),  # a scheduler ending the job: DataLoader workers too
        (signal.SIGINT, True, 1),  # Ctrl-C in a terminal
    ],
    ids=["sigterm", "sigterm-group", "ctrl-c"],
)
def test_a_signal_saves_a_checkpoint_says_so_and_resume_continues(
    data, tmp_path, capsys, signum, to_group, workers
):
    out, log = tmp_path / "run", tmp_path / "stdout.txt"
    config = tmp_path / "long.yaml"
    # No periodic checkpoint and no validation before the signal: what is saved is its doing.
    long = tiny_config(data, max_steps=10000, val_every=10000, checkpoint_every=10000, log_every=1)
    long["data"]["num_workers"] = workers
    config.write_text(yaml.safe_dump(long))
    process = _start_training(config, out, log)
    try:
        _wait_for_step(process, log, 3)
        os.killpg(process.pid, signum) if to_group else process.send_signal(signum)
        status = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stderr = log.with_suffix(".err").read_text()
    assert status == 128 + signum, stderr
    assert "Received SIGTERM" not in stderr, stderr  # Lightning's line: ours says it
    error = last_error_line(stderr)
    last = out / "checkpoints" / "last.ckpt"
    name = signal.Signals(signum).name
    match = re.fullmatch(
        rf"error: training interrupted at step (\d+) \({name}\): checkpoint saved to "
        rf"{re.escape(str(last))}; resume with clipfuse train --out {re.escape(str(out))} "
        "--resume",
        error,
    )
    assert match, error
    step = int(match.group(1))
    assert step >= 3 and saved_step(out) == step
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", f"train.max_steps={step + 1}"]) == 0
    steps = re.findall(r"^step (\d+)/", capsys.readouterr().out, re.MULTILINE)
    assert steps == [str(step + 1)]  # continued from the saved step, not from 0
    assert saved_step(out) == step + 1


class TermDuringValidation(L.Callback):
    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, *args) -> None:
        if trainer.state.fn == "fit" and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_validation_saves_that_step(data, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(data, max_steps=6, val_every=3, checkpoint_every=100)
    ctrl_c = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"at step 3 \(SIGTERM\): checkpoint saved"):
        train(config, out, callbacks=[TermDuringValidation()])
    assert saved_step(out) == 3
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # restored


def test_sigterm_with_a_full_disk_says_what_is_kept(data, tmp_path, monkeypatch):
    class TermAt(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                monkeypatch.setattr(torch, "save", disk_full)
                os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "run"
    config = tiny_config(data, max_steps=6, val_every=6, checkpoint_every=2)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, out, callbacks=[TermAt()])
    assert stopped.value.exit_code == 143
    assert "at step 3 (SIGTERM): cannot write the checkpoint" in str(stopped.value)
    assert "no space left on device" in str(stopped.value)
    assert f"{out / 'checkpoints'} keeps step 2" in str(stopped.value)
    monkeypatch.undo()
    assert saved_step(out) == 2 and not partial_files(out / "checkpoints")


# -- 3. a full disk ------------------------------------------------------------------------------


def disk_full(checkpoint, file) -> None:
    """What a full disk does to ``torch.save`` into a file: part written, then the file's
    ENOSPC, which torch raises as ``RuntimeError: [enforce fail at ...] unexpected pos ...``."""
    torch.serialization.save(checkpoint, FullDisk(file, room=4096))


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_old_one(
    run_copy, capsys, monkeypatch
):
    last = run_copy / "checkpoints" / "last.ckpt"
    before = digest(last)
    monkeypatch.setattr(torch, "save", disk_full)
    refused(
        capsys,
        ["train", "--out", str(run_copy), "--resume", "train.max_steps=4"],
        f"cannot write the checkpoint {last}: no space left on device; the earlier last.ckpt "
        "is kept",
    )
    assert digest(last) == before and not partial_files(last.parent)


# -- 4. save_pretrained and export ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model(finished_run):
    return clipfuse.load(finished_run / "checkpoints" / "last.ckpt", device="cpu")


def test_an_interrupted_save_pretrained_keeps_the_old_model(model, tmp_path, monkeypatch):
    folder = model.save_pretrained(tmp_path / "model")
    (folder / "README.md").write_text("my notes\n")
    before = {path.name: digest(path) for path in folder.iterdir()}
    original = Path.write_text

    def killed(path, *args, **kwargs):  # the weights are written, the config is not
        if path.name.startswith(".config.json."):
            original(path, "{")
            raise KeyboardInterrupt
        return original(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):  # each save has its own save_id: new bytes
        model.save_pretrained(folder)
    assert {path.name: digest(path) for path in folder.iterdir()} == before
    monkeypatch.undo()
    clipfuse.load(folder, device="cpu")


def test_weights_and_config_of_different_saves_are_refused(model, tmp_path):
    first = model.save_pretrained(tmp_path / "first")
    second = model.save_pretrained(tmp_path / "second")
    shutil.copy(first / "model.safetensors", second / "model.safetensors")  # a half-done save
    with pytest.raises(ClipfuseError, match="come from different saves") as error:
        clipfuse.load(second, device="cpu")
    assert str(second) in str(error.value) and "\n" not in str(error.value)


def test_save_pretrained_cleans_leftovers_and_writes_readable_files(model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    leftovers = [folder / ".model.safetensors.k1ll3d.partial.safetensors"]
    leftovers.append(folder / ".config.json.k1ll3d.partial.json")
    other = folder / ".notes.txt.abc.partial.txt"  # not the save's: left alone
    for path in (*leftovers, other):
        path.write_bytes(b"half")
    model.save_pretrained(folder)
    assert not any(path.exists() for path in leftovers) and other.exists()
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~mask  # not 0600
    assert json.loads((folder / "config.json").read_text())["save_id"]


def test_the_next_export_removes_what_a_killed_one_left(finished_run, tmp_path):
    from clipfuse.inference.export import export_checkpoint

    out = tmp_path / "model.onnx"
    leftover = tmp_path / ".model.onnx.k1ll3d.partial.onnx"
    leftover.write_bytes(b"18 MB of a 75 MB model")
    export_checkpoint(finished_run / "checkpoints" / "last.ckpt", out, exporter="torchscript")
    assert out.is_file() and not leftover.exists() and not partial_files(tmp_path)


# -- 5. resume checks what eval and clipfuse.load check, and that it is the run's checkpoint ----


def _foreign(last: Path, data: Path) -> str:
    torch.save({"epoch": 3, "model": {"weight": torch.zeros(2)}}, last)
    return "was not written by clipfuse (no 'clipfuse' entry)"


def _misfit(last: Path, data: Path) -> str:
    checkpoint = torch.load(last, weights_only=True)
    state = checkpoint["state_dict"]
    del state[next(key for key in state if key.startswith("model.decoder."))]
    torch.save(checkpoint, last)
    return "does not fit"


def _other_run(last: Path, data: Path) -> str:
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["clipfuse"]["config"]["seed"] = 7
    checkpoint["clipfuse"]["config"]["train"]["lr"] = 0.01
    torch.save(checkpoint, last)
    return "written with other settings than"


def _edited_method(last: Path, data: Path) -> str:
    config_path = last.parent.parent / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["model"]["method"] = "convformer"
    config["model"]["head_kwargs"] = {"dim": 32, "num_blocks": 1, "heads": 2}
    config_path.write_text(yaml.safe_dump(config))
    return "model.method ('plain' -> 'convformer')"


def _edited_classes(last: Path, data: Path) -> str:
    copy = Path(shutil.copytree(data, last.parent.parent.parent / "data4"))
    (copy / "classes.txt").write_text("sky\nroad\ncar\ntree\n")
    config_path = last.parent.parent / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["data"]["root"] = str(copy)
    config_path.write_text(yaml.safe_dump(config))
    return "trained on 3 classes (sky, road, car), the dataset of"


@pytest.mark.parametrize(
    "damage",
    [_foreign, _misfit, _other_run, _edited_method, _edited_classes],
    ids=lambda f: f.__name__[1:],
)
def test_resume_refuses_a_checkpoint_that_is_not_the_runs(run_copy, data, capsys, damage):
    last = run_copy / "checkpoints" / "last.ckpt"
    fragment = damage(last, data)
    before = {name: digest(run_copy / name) for name in ("config.yaml", "checkpoints/last.ckpt")}
    err = refused(capsys, ["train", "--out", str(run_copy), "--resume"], str(last), fragment)
    assert "Traceback" not in err
    assert {name: digest(run_copy / name) for name in before} == before


def test_resume_refuses_max_steps_below_the_checkpoints_step(run_copy, capsys):
    refused(
        capsys,
        ["train", "--out", str(run_copy), "--resume", "train.max_steps=1"],
        "is at step 2, beyond train.max_steps 1: pass train.max_steps=2 or more",
    )
    assert saved_step(run_copy) == 2
