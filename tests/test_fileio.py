"""The one atomic-write helper: temporary file next to the target, cleaned up on failure; output
paths that cannot be written (a file, a folder, read-only) are one line in every command."""

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from helpers import refused, snapshot

from clipfuse.errors import ClipfuseError
from clipfuse.fileio import (
    atomic_write,
    atomic_write_all,
    atomic_write_text,
    partial_files,
    prepare_dir,
    prepare_file,
    remove_partial_files,
)

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only folders


def test_replaces_the_target_and_keeps_the_usual_permissions(tmp_path):
    target = tmp_path / "deep" / "report.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert not partial_files(target.parent)


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("good")
    seen: list[Path] = []

    def half_then_fail(path: Path) -> None:
        seen.append(path)
        path.write_text("ha")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "good"
    assert seen[0].parent == tmp_path and seen[0].suffix == ".onnx"  # next to it, same suffix
    assert not seen[0].exists() and not partial_files(tmp_path)


def test_an_os_error_while_writing_is_one_line(tmp_path):
    def full(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ClipfuseError, match=r"cannot write .*x\.bin: no space left on device;"):
        atomic_write(tmp_path / "x.bin", full)
    (tmp_path / "x.bin").write_text("good")
    with pytest.raises(ClipfuseError, match=r"the checkpoint .*x\.bin: .* earlier x\.bin is kept"):
        atomic_write(tmp_path / "x.bin", full, "checkpoint")
    assert (tmp_path / "x.bin").read_text() == "good"
    assert not partial_files(tmp_path)


def test_files_that_belong_together_are_replaced_together(tmp_path):
    weights, config = tmp_path / "model.safetensors", tmp_path / "config.json"
    weights.write_text("old weights")
    config.write_text("old config")

    def fail(path: Path) -> None:
        path.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the second file fails: the first is not replaced
        atomic_write_all({weights: lambda p: p.write_text("new weights"), config: fail})
    assert (weights.read_text(), config.read_text()) == ("old weights", "old config")
    assert not partial_files(tmp_path)
    atomic_write_all(
        {weights: lambda p: p.write_text("new"), config: lambda p: p.write_text("new")}
    )
    assert (weights.read_text(), config.read_text()) == ("new", "new")


def test_a_writer_that_creates_its_own_file_gets_the_usual_permissions(tmp_path):
    def recreate(path: Path) -> None:  # as safetensors does: a new file, mode 0600
        path.unlink()
        descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(descriptor)

    target = atomic_write(tmp_path / "model.safetensors", recreate)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_leftovers_of_killed_writes_are_found_and_removed(tmp_path):
    leftover = tmp_path / ".last.ckpt.abc123.partial.ckpt"
    leftover.write_bytes(b"x")
    (tmp_path / "last.ckpt").write_bytes(b"y")
    assert remove_partial_files(tmp_path) == [leftover]
    assert not leftover.exists() and (tmp_path / "last.ckpt").exists()
    assert remove_partial_files(tmp_path / "absent") == []
    other = tmp_path / ".config.json.xyz.partial.json"
    mine = tmp_path / ".model.onnx.abc.partial.onnx"
    other.write_bytes(b"x")
    mine.write_bytes(b"x")
    assert remove_partial_files(tmp_path, "model.onnx") == [mine]  # only that target's
    assert other.exists()


def test_output_paths_are_checked_before_the_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ClipfuseError, match="a_file is a file: expected a folder"):
        prepare_dir(a_file)
    with pytest.raises(ClipfuseError, match="a_file is a file, not a folder"):
        prepare_dir(a_file / "sub")
    with pytest.raises(ClipfuseError, match="a_file is a file, not a folder"):
        prepare_file(a_file / "sub" / "m.onnx")
    with pytest.raises(ClipfuseError, match="is a folder: expected a file path"):
        prepare_file(tmp_path)
    assert a_file.read_text() == "x"


def test_output_paths_that_cannot_be_written_are_one_line(world, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    ckpt = str(world.checkpoint)
    image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
    cases = [
        (["export", "--model", ckpt, "--out", str(folder)], "is a folder"),
        (["export", "--model", ckpt, "--out", str(a_file / "m.onnx")], "is a file"),
        (["predict", image, "--model", ckpt, "--out", str(a_file)], "is a file"),
        (["predict", image, "--model", ckpt, "--out", str(a_file / "sub")], "is a file"),
        (["train", "--config", str(world.config), "--out", str(a_file)], "is a file"),
        (["train", "--config", str(world.config), "--out", str(a_file / "run")], "is a file"),
        (["eval", "--model", ckpt, "--output", str(folder)], "is a folder"),
        (["eval", "--model", ckpt, "--output", str(a_file / "m.json")], "is a file"),
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
            ["export", "--model", ckpt, "--out", str(locked / "m.onnx")],
            ["predict", image, "--model", ckpt, "--out", str(locked)],
            ["train", "--config", str(world.config), "--out", str(locked)],
            ["eval", "--model", ckpt],  # its logs would go to read-only/eval
        ):
            refused(capsys, argv, str(locked), "permission denied")
    finally:
        locked.chmod(0o755)
    assert snapshot(locked) == before
    assert {p.name for p in locked.iterdir()} <= {"checkpoints", "eval"}
