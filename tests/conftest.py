"""Fixtures shared by every test folder (helpers live in tests/helpers.py)."""

import atexit
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    TINY_ARCH,
    TINY_OPEN_CLIP_CONFIG,
    require_shared,
    tiny_config,
    write_folder_dataset,
)

from clipfuse import threads

# Before Lightning is imported: it imports huggingface_hub, which reads its offline switch and
# cache folder once, at import (torch, yaml, helpers and clipfuse above do not import it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded in the tests
# The suite never reads or writes the user's caches: one empty folder for the whole run
# (subprocesses inherit it), so a test cannot pass on what an earlier run left behind.
_TEST_CACHE = tempfile.mkdtemp(prefix="clipfuse-test-cache-")
atexit.register(shutil.rmtree, _TEST_CACHE, ignore_errors=True)
os.environ["CLIPFUSE_CACHE"] = _TEST_CACHE
for _variable in ("HF_HOME", "TORCH_HOME"):
    os.environ[_variable] = os.path.join(_TEST_CACHE, _variable.lower())

# Lightning binds its log handler to sys.stderr when first imported. Imported here, that is
# pytest's session-wide capture; imported inside a test with capsys, it would be that test's
# stream: later tests would log into a closed file and see Lightning's INFO lines on stderr.
import lightning.pytorch  # noqa: E402, F401

torch.set_num_threads(min(2, torch.get_num_threads()))
# `train.threads: auto` samples other work for 0.5 s at each training start: the suite's ~100
# in-process trainings sample 0.05 s (tests/test_threads.py measures with its own windows).
threads.SAMPLE_SECONDS = 0.05


@pytest.fixture
def shared() -> Path:
    return require_shared(".")


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return write_folder_dataset(tmp_path / "tiny")


@dataclass(frozen=True)
class World:
    """One tiny FPN run (2 steps on 32x32 crops, a checkpoint at step 2), trained once for the
    session for the bad-input cases (docs/research/robustness.md); cases that change it use
    ``run_copy``."""

    data: Path
    config: Path  # the run's config as a YAML file
    run: Path
    validations: int

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    import lightning as L

    from clipfuse.engine import train

    class CountValidations(L.Callback):
        def __init__(self) -> None:
            self.count = 0

        def on_validation_end(self, trainer, module) -> None:
            self.count += 1

    root = tmp_path_factory.mktemp("matrix")
    data = write_folder_dataset(root / "data")
    config = tiny_config(data, max_steps=2, val_every=2, checkpoint_every=2)
    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    counter = CountValidations()
    train(config, root / "run", callbacks=[counter])
    return World(data, config_path, root / "run", counter.count)


@pytest.fixture(scope="session")
def model(world):
    import clipfuse

    return clipfuse.load(world.checkpoint, device="cpu")


@pytest.fixture
def run_copy(world, tmp_path) -> Path:
    return Path(shutil.copytree(world.run, tmp_path / "run"))


@pytest.fixture(scope="session")
def open_clip_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``open_clip:<tiny arch>/<local .safetensors>`` with the arch registered in open_clip."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip")
    config = folder / f"{TINY_ARCH}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH)
    checkpoint = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
    return f"open_clip:{TINY_ARCH}/{checkpoint}"
