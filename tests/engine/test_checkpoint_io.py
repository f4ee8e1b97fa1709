"""The training's checkpoint writer (engine/checkpoint_io.py): atomic, next to the target."""

import tempfile

import pytest
import torch
from helpers import FullDisk, snapshot


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


def test_a_full_disk_is_one_line_and_other_errors_are_not_taken_for_one(tmp_path, monkeypatch):
    from clipfuse.engine.checkpoint_io import AtomicCheckpointIO
    from clipfuse.errors import ClipfuseError
    from clipfuse.fileio import partial_files

    io_plugin = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io_plugin.save_checkpoint({"step": 1}, target)
    before = snapshot(target)

    def full(obj, file):  # the real torch.save, into a file that fills up
        torch.serialization.save(obj, FullDisk(file, room=4096))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ClipfuseError) as error:
        io_plugin.save_checkpoint({"step": 2, "weights": torch.zeros(10_000)}, target)
    assert str(error.value) == (
        f"cannot write the checkpoint {target}: no space left on device; the earlier last.ckpt "
        "is kept; free some space or write elsewhere"
    )
    raised = error.value.__cause__.__cause__  # what torch raised: was the traceback
    assert isinstance(raised, RuntimeError) and "unexpected pos" in str(raised)

    def broken(obj, file):  # a RuntimeError not caused by the file stays what it is
        raise RuntimeError("not about the disk")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="not about the disk"):
        io_plugin.save_checkpoint({"step": 2}, target)
    assert snapshot(target) == before and not partial_files(tmp_path)
