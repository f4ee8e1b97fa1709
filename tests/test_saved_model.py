"""Reading a checkpoint (clipfuse.saved_model): damaged, malicious, newer or foreign files are
one line in every command that reads them, and no payload runs."""

import pytest
from helpers import refused, write_bad_checkpoint

KINDS = ["empty", "truncated", "random", "malicious", "version99", "misfit", "foreign"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoints_give_one_line_everywhere(world, tmp_path, capsys, kind):
    bad = tmp_path / "bad.ckpt"
    fragment = write_bad_checkpoint(kind, world.checkpoint, bad)
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
