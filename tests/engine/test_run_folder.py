"""clipfuse.engine.run_folder: a run folder's config carries its format version and is read
back upgraded, as a checkpoint's is."""

import json

import pytest
import torch
import yaml
from helpers import tiny_config

from clipfuse.config import FORMAT_VERSION
from clipfuse.engine import train
from clipfuse.engine.run_folder import (
    FORMAT_FILE,
    UNRECORDED_VERSION,
    read_run_config,
    run_format_version,
    write_run_config,
)
from clipfuse.errors import ClipfuseError
from clipfuse.saved_model import load_checkpoint


def _checkpoint(path, format_version):
    path.parent.mkdir(parents=True)
    meta = {"config": {}, "class_names": ["a", "b"], "format_version": format_version}
    torch.save({"clipfuse": meta, "state_dict": {}}, path)


def test_a_run_folder_records_its_format_version(folder_dataset, tmp_path):
    config = tiny_config(folder_dataset, "convformer")
    write_run_config(tmp_path, config)
    assert json.loads((tmp_path / FORMAT_FILE).read_text()) == {"format_version": FORMAT_VERSION}
    assert run_format_version(tmp_path) == FORMAT_VERSION
    assert read_run_config(tmp_path) == config


def test_a_folder_without_a_record_is_read_at_its_checkpoints_version(tmp_path):
    assert run_format_version(tmp_path) == UNRECORDED_VERSION  # nothing trained there yet
    _checkpoint(tmp_path / "checkpoints" / "last.ckpt", 2)
    assert run_format_version(tmp_path) == 2


@pytest.mark.parametrize(
    "record, message",
    [
        ('{"format_version": 99}', "has format version 99; this clipfuse reads versions 1 to"),
        ("[4]", "is not a run folder's format record"),
        ("{", "is not a run folder's format record"),
    ],
)
def test_a_newer_or_damaged_record_is_refused(tmp_path, record, message):
    (tmp_path / FORMAT_FILE).write_text(record)
    with pytest.raises(ClipfuseError, match=message):
        run_format_version(tmp_path)


def test_a_folder_from_before_the_gate_default_resumes_with_its_checkpoints_model(
    folder_dataset, tmp_path
):
    """A folder written by a clipfuse of format 2 (no format record; Conv-Former had no gates,
    so its config.yaml names no ``gate_init``) resumes ungated, as its checkpoint was trained."""
    out = tmp_path / "run"
    config = tiny_config(folder_dataset, "convformer", max_steps=2, val_every=2)
    config["model"]["head_kwargs"]["gate_init"] = None
    train(config, out)
    (out / FORMAT_FILE).unlink()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["model"]["head_kwargs"]["gate_init"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["clipfuse"]["format_version"] = 2
    del checkpoint["clipfuse"]["config"]["model"]["head_kwargs"]["gate_init"]
    torch.save(checkpoint, last)

    (out / FORMAT_FILE).write_text('{"format_version": 4}')  # read as today's: gated
    with pytest.raises(ClipfuseError, match=r"other settings .*gate_init \(None -> absent\)"):
        train(None, out, resume=True)
    (out / FORMAT_FILE).unlink()
    train(None, out, resume=True, overrides=["train.max_steps=4"])  # weights loaded strictly

    config, _, state = load_checkpoint(last)
    assert config["model"]["head_kwargs"]["gate_init"] is None
    assert torch.load(last, weights_only=True)["global_step"] == 4
    assert not any("gate" in key for key in state)
    assert read_run_config(out)["model"]["head_kwargs"]["gate_init"] is None  # upgraded, kept
    assert run_format_version(out) == FORMAT_VERSION
