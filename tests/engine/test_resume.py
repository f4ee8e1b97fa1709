"""``clipfuse train --resume`` (engine/resume.py): safe changes are applied and announced,
others refused listing them; a damaged last checkpoint is one line and changes nothing; a run
stopped and resumed ends with the uninterrupted run's weights."""

import json
import os
import shutil
import signal

import lightning as L
import pytest
import torch
import yaml
from helpers import refused, snapshot, tiny_config, write_bad_checkpoint, write_folder_dataset
from test_train import CrashAt

from clipfuse.cli import main
from clipfuse.config import load_config
from clipfuse.engine import train
from clipfuse.engine.batch_stream import STREAM_FILE
from clipfuse.engine.stops import TrainingInterrupted


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


# -- a resumed run is the uninterrupted run ------------------------------------------------------


class TermAt(L.Callback):
    """``kill <pid>`` after a given step: the run saves that step and stops."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def exact_config(data) -> dict:
    """6 steps in fp32 on one thread: what a resumed run reproduces bit for bit. bf16-mixed,
    and two threads on both sides of the stop, were bit-identical too when measured on the
    2-core EPYC (not asserted: kernels may pick their order by thread count and CPU). Not
    across thread counts (train.threads may change on resume, ``auto`` follows other work):
    sums are ordered otherwise there, and Adam turns the last-bit differences into whole steps
    on gradients near 0 (docs/research/robustness.md, "Stopping and resuming")."""
    return tiny_config(
        data, max_steps=6, val_every=6, checkpoint_every=4, threads=1, precision="32-true"
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The dataset and the final checkpoint of the run trained in one go."""
    root = tmp_path_factory.mktemp("exact")
    data = write_folder_dataset(root / "data")
    train(exact_config(data), root / "run")
    return data, torch.load(root / "run" / "checkpoints" / "last.ckpt", weights_only=True)


def differing(reference: dict, checkpoint: dict) -> list[str]:
    """The weights, BatchNorm statistics and optimiser moments that are not bit-identical."""
    names = [
        k
        for k, v in reference["state_dict"].items()
        if not torch.equal(v, checkpoint["state_dict"][k])
    ]
    moments = zip(
        reference["optimizer_states"][0]["state"].values(),
        checkpoint["optimizer_states"][0]["state"].values(),
        strict=True,
    )
    for index, (ours, theirs) in enumerate(moments):
        names += [f"optimizer {index} {k}" for k in ours if not torch.equal(ours[k], theirs[k])]
    return names


@pytest.mark.parametrize(
    "stop, saved_step, raised",
    [
        (TermAt(3), 3, TrainingInterrupted),  # saved where SIGTERM stopped it
        (CrashAt(5), 4, RuntimeError),  # a crash: continued from the periodic checkpoint
    ],
    ids=["sigterm", "crash"],
)
def test_a_stopped_and_resumed_run_ends_with_the_uninterrupted_runs_weights(
    uninterrupted, tmp_path, stop, saved_step, raised
):
    data, reference = uninterrupted
    out = tmp_path / "run"
    with pytest.raises(raised):
        train(exact_config(data), out, callbacks=[stop])
    train(None, out, resume=True)
    resumed = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == 6
    assert differing(reference, resumed) == []
    record = json.loads((out / STREAM_FILE).read_text())
    assert record["resumes"] == [{"step": saved_step, "random_state": True}]


def test_resuming_a_checkpoint_without_random_state_says_so_and_records_it(
    uninterrupted, tmp_path, capsys
):
    data, reference = uninterrupted
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(exact_config(data), out, callbacks=[TermAt(3)])
    last = out / "checkpoints" / "last.ckpt"
    old = torch.load(last, weights_only=True)  # as clipfuse wrote it before it kept the state
    for key in ("random_state", "resumes"):
        del old["callbacks"]["BatchStream"][key]
    torch.save(old, last)
    capsys.readouterr()
    train(None, out, resume=True)
    err = capsys.readouterr().err
    assert (
        "note: resuming at step 3: the checkpoint holds no random state (written by an older "
        "clipfuse), so dropout draws afresh" in err
    )
    record = json.loads((out / STREAM_FILE).read_text())
    assert record["resumes"] == [{"step": 3, "random_state": False}]
    resumed = torch.load(last, weights_only=True)
    assert differing(reference, resumed)  # what the restored state makes equal above
