"""An export target that cannot be replaced is refused before the model is built (issue 24):
an immutable file (which even root cannot change) failed only at the final rename, after the
export's work; a read-only file was silently replaced."""

import os
import shutil
import stat
import subprocess

import pytest
from helpers import error_line

import clipfuse.build
from clipfuse.cli import main

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def no_model_is_built(monkeypatch):
    def built(*args, **kwargs):
        raise AssertionError("the model was built before the output was checked")

    monkeypatch.setattr(clipfuse.build, "load_model", built)


def export(capsys, out) -> str:
    capsys.readouterr()
    assert main(["export", "--model", "run/last.ckpt", "--out", str(out)]) == 2
    return error_line(capsys.readouterr().err)


@pytest.mark.skipif(shutil.which("chattr") is None or not ROOT_USER, reason="chattr +i needs root")
def test_an_immutable_target_is_refused_before_the_export(tmp_path, capsys, no_model_is_built):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the model of an earlier export")
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip(f"this file system has no immutable flag ({tmp_path})")
    try:
        line = export(capsys, out)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert line == (
        f"error: cannot replace the ONNX file {out}: it cannot be written (immutable or "
        "append-only: see lsattr; or another user's); make it writable or choose another path"
    )
    assert out.read_bytes() == b"the model of an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no probe left


def test_a_read_only_target_is_not_replaced(tmp_path, capsys, monkeypatch, no_model_is_built):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"a model someone protected")
    out.chmod(0o444)
    if ROOT_USER:  # root may write any file: deny as the kernel would for its owner
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: m != os.W_OK and real(p, m))
    try:
        line = export(capsys, out)
    finally:
        out.chmod(0o644)
    assert line == (
        f"error: cannot replace the ONNX file {out}: it is read-only "
        f"({stat.filemode(stat.S_IFREG | 0o444)}); make it writable or choose another path"
    )
    assert out.read_bytes() == b"a model someone protected"
