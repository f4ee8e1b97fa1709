import json
import shutil

import lightning as L
import pytest
import torch
import yaml
from helpers import last_error_line, refused, snapshot, tiny_config

from clipfuse.cli import main
from clipfuse.engine import train
from clipfuse.engine.run_folder import changes_from_saved, read_run_config
from clipfuse.errors import ClipfuseError
from clipfuse.saved_model import load_checkpoint


class CrashAt(L.Callback):
    """Simulates a crash (power cut, pre-emption) after a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("method", ["plain", "convformer", "denseclip"])
def test_train_writes_config_checkpoint_and_metrics(folder_dataset, tmp_path, method):
    out = tmp_path / "run"
    results = train(tiny_config(folder_dataset, method), out)
    assert 0.0 <= results["mIoU"] <= 100.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 4
    assert {row["name"] for row in metrics["per_class"]} == {"sky", "road", "car"}
    assert (out / "config.yaml").is_file()
    assert (out / "logs" / "csv" / "version_0" / "metrics.csv").is_file()
    config, class_names, state = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert config["model"]["method"] == method and class_names == ["sky", "road", "car"]


def test_interrupted_run_resumes_from_its_last_checkpoint(folder_dataset, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(folder_dataset, max_steps=6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, out, callbacks=[CrashAt(step=3)])
    saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2  # checkpoints every 2 steps: step 3 is lost, step 2 is kept
    with pytest.raises(ClipfuseError, match="already holds a run"):
        train(config, out)
    train(None, out, resume=True)
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert (out / "logs" / "csv" / "version_0").is_dir()  # the first attempt's logs are kept
    assert (out / "logs" / "csv" / "version_1" / "metrics.csv").is_file()
    assert final["global_step"] == 6
    scheduler = final["lr_schedulers"][0]
    assert scheduler["last_epoch"] == 6  # the schedule continued, it did not restart
    assert final["optimizer_states"][0]["state"]  # optimiser moments were restored and kept


def test_ohem_with_balanced_weights_trains_and_the_run_records_the_weights(
    folder_dataset, tmp_path, capsys
):
    out = tmp_path / "run"
    config = tiny_config(folder_dataset, loss="ohem", ohem_min_kept=64, class_weight="balanced")
    assert 0.0 <= train(config, out)["mIoU"] <= 100.0
    assert "train.class_weight balanced: ENet weights" in capsys.readouterr().err
    saved = read_run_config(out)["train"]
    assert saved["loss"] == "ohem" and len(saved["class_weight"]) == 3
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")[0]["train"] == saved
    # Resuming with the config that says balanced reads the recorded list, never recounts.
    assert "train.class_weight" not in changes_from_saved(out, config)[1]


def test_class_weights_of_another_length_are_refused_before_the_run_folder_is_written(
    folder_dataset, tmp_path
):
    out = tmp_path / "run"
    with pytest.raises(ClipfuseError, match="class_weight has 2 entries: expected 3, one per"):
        train(tiny_config(folder_dataset, class_weight="[1, 2]"), out)
    assert not (out / "config.yaml").exists()


def test_a_training_split_smaller_than_a_batch_is_refused_before_the_run_folder_is_written(
    folder_dataset, tmp_path, capsys
):
    # 4 training images, batches of 8 with incomplete ones dropped: no step could run (was
    # "No training batches", exit 0, a step-0 last.ckpt and metrics.json as if trained)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(folder_dataset)))
    out = tmp_path / "run"
    refused(
        capsys,
        ["train", "--config", str(config), "--out", str(out), "data.batch_size=8"],
        f"({folder_dataset / 'images' / 'train'}) has 4 image(s)",
        "data.batch_size 8",
        "lower data.batch_size to 4 or less",
        read=last_error_line,
    )
    assert sorted(path.name for path in out.iterdir()) == [".lock"]
    # nothing blocks the retry with a batch that fits
    assert main(["train", "--config", str(config), "--out", str(out), "data.batch_size=4"]) == 0
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("images", "fix"),
    [(3, "lower data.batch_size to 1 or less"), (1, "times their number must be at most 1")],
)
def test_a_training_split_needs_a_batch_on_every_process(folder_dataset, images, fix):
    from clipfuse.engine.datamodule import SegmentationDataModule

    data = dict(tiny_config(folder_dataset)["data"], batch_size=2, train_images=images)
    module = SegmentationDataModule(mean=(0, 0, 0), std=(1, 1, 1), **data)
    with pytest.raises(ClipfuseError) as error:
        module.check_batches(world_size=2)
    message = str(error.value)
    assert f"has {images} image(s) (data.train_images {images})" in message, message
    assert "data.batch_size 2 on each of 2 processes, 4 images" in message, message
    assert fix in message, message
    if images >= 2:
        module.check_batches(world_size=1)  # enough for one process's batch


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ClipfuseError, match="cannot resume"):
        train(None, tmp_path / "nothing", resume=True)


def test_auto_precision_is_announced_recorded_and_progress_is_printed(
    folder_dataset, tmp_path, capsys, monkeypatch
):
    from clipfuse import precision
    from clipfuse.cpu_probe import Verdict

    ms = {"fp32": 2.0, "fp32-cl": 2.0, "bf16": 1.5, "bf16-cl": 1.0}
    verdict = Verdict(precision="bf16-mixed", channels_last=True, ms=ms)
    monkeypatch.setattr(precision, "cpu_verdict", lambda purpose: (verdict, "measured now"))
    out = tmp_path / "run"
    train(tiny_config(folder_dataset, "convformer", log_every=2), out)
    captured = capsys.readouterr()
    printed = captured.out
    assert (
        "note: training in bf16-mixed with channels-last tensors (speed against fp32 contiguous: "
        "fp32-cl 1.00x, bf16 1.33x, bf16-cl 2.00x; measured now)" in captured.err
    )
    saved = (out / "config.yaml").read_text()
    assert "precision: bf16-mixed" in saved and "channels_last: true" in saved
    # stdout is not a terminal here: plain progress lines instead of a bar
    lines = [line for line in printed.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"]
    assert all("img/s" in line and "ETA" in line and "loss" in line for line in lines)


def test_the_progress_bar_of_a_step_budget_has_no_epoch_total():
    from clipfuse.engine.progress import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, callbacks=[bar])
    bar.trainer.fit_loop.max_epochs = -1  # what fit() sets for a max_steps run
    assert bar.trainer.max_epochs == -1
    assert bar._get_train_description(0).strip() == "Epoch 0"  # was "Epoch 0/-2"


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


def test_fine_tuning_starts_from_a_trained_model_on_a_subset_of_images(world, tmp_path, capsys):
    config = tiny_config(world.data, max_steps=2, val_every=2, init_from=str(world.checkpoint))
    config["data"]["train_images"] = 2
    train(config, tmp_path / "run")
    assert (
        f"train.init_from {world.checkpoint}: weights loaded; classes from its classes: "
        "sky<-sky, road<-road, car<-car; new classes (fresh): none"
    ) in capsys.readouterr().err
    saved, _, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert saved["train"]["init_from"] == str(world.checkpoint)
    assert saved["data"]["train_images"] == 2
