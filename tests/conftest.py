"""Fixtures shared by every test folder (helpers live in tests/helpers.py)."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import require_shared, write_folder_dataset

from clipfuse import threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded in the tests
# The suite never reads or writes the user's caches: one empty folder for the whole run
# (subprocesses inherit it), so a test cannot pass on what an earlier run left behind.
_TEST_CACHE = tempfile.mkdtemp(prefix="clipfuse-test-cache-")
atexit.register(shutil.rmtree, _TEST_CACHE, ignore_errors=True)
os.environ["CLIPFUSE_CACHE"] = _TEST_CACHE
for _variable in ("HF_HOME", "TORCH_HOME"):
    os.environ[_variable] = os.path.join(_TEST_CACHE, _variable.lower())
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
