"""Reading a checkpoint (clipfuse.saved_model): damaged, malicious, newer or foreign files are
one line in every command that reads them, and no payload runs; a save_pretrained killed at any
step leaves a folder that loads as the old model or the new one."""

import json
import os
import signal
import time
import traceback
from pathlib import Path

import pytest
import torch
from helpers import refused, write_bad_checkpoint

import clipfuse
from clipfuse.errors import ClipfuseError
from clipfuse.fileio import partial_files
from clipfuse.inference import ClipfuseModel
from clipfuse.saved_model import PREVIOUS_DIR

KINDS = ["empty", "truncated", "random", "malicious", "version99", "misfit", "foreign"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoints_give_one_line_everywhere(world, tmp_path, capsys, kind):
    bad = tmp_path / "bad.ckpt"
    fragment = write_bad_checkpoint(kind, world.checkpoint, bad)
    image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
    for argv in (
        ["eval", "--model", str(bad)],
        ["predict", image, "--model", str(bad), "--out", str(tmp_path / "predictions")],
        ["export", "--model", str(bad), "--out", str(tmp_path / "m.onnx")],
    ):
        err = refused(capsys, argv, str(bad), fragment)
        assert "weights_only" not in err
    assert not (tmp_path / "pwned").exists()  # the payload never ran
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "predictions").exists()


def test_class_names_that_labels_cannot_tell_apart_are_refused_at_load(
    world, model, tmp_path, capsys
):
    """A hand-edited checkpoint (or one from before class lists were checked) with ``sky`` and
    ``Sky``: ``--labels sky`` answered ``Sky``, class 0 could not be reached."""
    checkpoint = torch.load(world.checkpoint, weights_only=True)
    assert checkpoint["clipfuse"]["class_names"] == ["sky", "road", "car"]
    checkpoint["clipfuse"]["class_names"] = ["sky", "Sky", "car"]
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    clash = "has names that differ only in case, spaces, underscores or hyphens ('sky' and 'Sky')"
    image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
    for argv in (
        ["predict", image, "--model", str(bad), "--labels", "sky", "--out", str(tmp_path / "p")],
        ["eval", "--model", str(bad)],
    ):
        refused(capsys, argv, f"class list of checkpoint {bad} {clash}")
    folder = model.save_pretrained(tmp_path / "model")
    meta = json.loads((folder / "config.json").read_text())
    meta["class_names"] = ["sky", "Sky", "car"]
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ClipfuseError) as error:
        clipfuse.load(folder, device="cpu")
    assert str(error.value).startswith(f"class list of {folder / 'config.json'} {clash}")


# -- save_pretrained killed at each step ----------------------------------------------------------

# The file-system calls a save makes that change what is on disk (a kill is tried before each).
KILL_POINTS = ("mkdir", "link", "chmod", "fsync", "replace", "rename", "unlink", "rmdir")


def _kill_before(step: int) -> None:
    """Make this process SIGKILL itself just before its ``step``-th call of ``KILL_POINTS``."""
    calls = 0

    def counted(call):
        def wrapped(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return call(*args, **kwargs)

        return wrapped

    for name in KILL_POINTS:
        setattr(os, name, counted(getattr(os, name)))


def save_killed_at(model: ClipfuseModel, folder: Path, step: int) -> bool:
    """``model.save_pretrained(folder)`` in a forked process killed (SIGKILL, as ``kill -9``)
    before its ``step``-th file-system change; whether it was killed (False: the save ended)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)  # OpenMP's threads do not survive a fork
            _kill_before(step)
            model.save_pretrained(folder)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the save killed at step {step} hung")
        time.sleep(0.01)
    status = done[1]
    assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0, f"the save failed ({status})"
    return os.WIFSIGNALED(status)


def _changed(world, value: float) -> ClipfuseModel:
    """The World's model with other weights (``value`` added to its first parameter)."""
    model = clipfuse.load(world.checkpoint, device="cpu")
    with torch.no_grad():
        next(model.segmentor.parameters()).add_(value)
    return model


def _interrupt_between_the_renames(
    old: ClipfuseModel, new: ClipfuseModel, folder: Path, steps: range
) -> int:
    """Save ``old`` into ``folder``, then kill a save of ``new`` at the first of ``steps`` that
    leaves ``new``'s weights beside ``old``'s config (between the two renames); that step."""
    for step in steps:
        old.save_pretrained(folder)
        weights, config = ((folder / name).read_bytes() for name in FILES)
        assert save_killed_at(new, folder, step), "no kill left new weights beside the old config"
        if (folder / FILES[0]).read_bytes() != weights:
            assert (folder / FILES[1]).read_bytes() == config
            return step
    raise AssertionError(f"no kill at steps {steps} left new weights beside the old config")


FILES = ("model.safetensors", "config.json")


@pytest.mark.parametrize("start", ["saved", "interrupted"])
def test_save_pretrained_killed_at_any_step_leaves_a_whole_model(
    world, model, tmp_path, capsys, start
):
    """``start``: the folder holds a saved model, or the new weights of a save killed between
    its renames beside the old config (then the old model is still the last whole one)."""
    first, second = _changed(world, 1.0), _changed(world, 2.0)
    old, new = model.fingerprint(), second.fingerprint()
    assert len({old, first.fingerprint(), new}) == 3
    loaded, between = [], range(1, 100)
    for step in range(1, 100):
        folder = tmp_path / f"model-{step}"
        model.save_pretrained(folder)
        if start == "interrupted":
            between = range(_interrupt_between_the_renames(model, first, folder, between), 100)
        capsys.readouterr()
        killed = save_killed_at(second, folder, step)
        fingerprint = clipfuse.load(folder, device="cpu").fingerprint()
        assert fingerprint in (old, new), f"killed at step {step}: neither the old nor the new"
        interrupted = "a save_pretrained was interrupted" in capsys.readouterr().err
        loaded.append(("old" if fingerprint == old else "new", interrupted))
        if not killed:  # the save ran to its end: every step has had its kill
            assert loaded[-1] == ("new", False)
            assert not (folder / PREVIOUS_DIR).exists() and not partial_files(folder)
            break
        second.save_pretrained(folder)  # the next save completes the folder
        assert clipfuse.load(folder, device="cpu").fingerprint() == new
        assert not (folder / PREVIOUS_DIR).exists() and not partial_files(folder)
    else:
        raise AssertionError("a save of 100 steps?")
    # old until the weights are renamed, old (kept aside) until the config is, then new
    assert ("old", True) in loaded and loaded[-1] == ("new", False), loaded
    outcomes = [outcome for outcome, _ in loaded]
    assert outcomes == sorted(outcomes, key=["old", "new"].index), loaded


def test_a_card_that_cannot_be_written_leaves_the_whole_old_folder(model, tmp_path):
    """The model card is one of the save's files: a failure writing it (here a card that is no
    valid text) leaves weights, config and card as they were, and no temporary file."""
    from clipfuse.saved_model import pretrained_config, write_pretrained

    folder = model.save_pretrained(tmp_path / "m")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(before) == ["README.md", "config.json", "model.safetensors"]
    meta = pretrained_config(model.config, model.class_names, model.mean, model.std, model.palette)
    state = {k: (v + 1).cpu().contiguous() for k, v in model.segmentor.state_dict().items()}
    with pytest.raises(UnicodeEncodeError):
        write_pretrained(folder, state, meta, card="\ud800 not encodable")
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert not partial_files(folder)
