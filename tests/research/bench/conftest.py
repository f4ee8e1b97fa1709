"""Fixtures of the bench tests."""

import pytest
from helpers import write_tiny_configs


@pytest.fixture
def config_files(folder_dataset, tmp_path):
    """A tiny plain and a tiny Conv-Former config on the tiny folder dataset."""
    return write_tiny_configs(folder_dataset, tmp_path)
