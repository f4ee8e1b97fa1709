"""Fixtures shared by every test folder (helpers live in tests/helpers.py)."""

import os
from pathlib import Path

import pytest
import torch
from helpers import require_shared, write_folder_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded in the tests
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def shared() -> Path:
    return require_shared(".")


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return write_folder_dataset(tmp_path / "tiny")
