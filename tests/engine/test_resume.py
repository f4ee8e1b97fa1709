"""``clipfuse train --resume`` (engine/resume.py): safe changes are applied and announced,
others refused listing them; a damaged last checkpoint is one line and changes nothing."""

import shutil

import pytest
import torch
import yaml
from helpers import refused, snapshot, write_bad_checkpoint

from clipfuse.cli import main
from clipfuse.config import load_config


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


@pytest.mark.parametrize("kind", ["empty", "truncated", "malicious", "version99"])
def test_resume_on_a_damaged_last_checkpoint_is_one_line(run_copy, capsys, kind):
    last = run_copy / "checkpoints" / "last.ckpt"
    good = run_copy.parent / "good.ckpt"
    shutil.copy(last, good)
    fragment = write_bad_checkpoint(kind, good, last)
    before = snapshot(run_copy)
    err = refused(capsys, ["train", "--out", str(run_copy), "--resume"], fragment)
    assert "weights_only" not in err
    after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if "/logs/" not in k} == {
        k: v for k, v in before.items() if "/logs/" not in k
    }
    assert not (run_copy / "checkpoints" / "pwned").exists()
