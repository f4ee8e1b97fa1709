"""The training's checkpoint writer (engine/checkpoint_io.py): atomic, next to the target."""

import tempfile

import pytest
import torch
from helpers import snapshot


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
