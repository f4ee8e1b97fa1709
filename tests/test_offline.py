"""The suite runs offline and on its own caches (tests/conftest.py): huggingface_hub, which
reads its settings once at import, must have been imported after conftest set them, or a test
that builds a hub model reaches for the network (and the user's cache) with retries."""

import os

from huggingface_hub import constants


def test_huggingface_hub_is_offline_and_uses_the_suites_cache():
    assert constants.HF_HUB_OFFLINE
    assert constants.HF_HOME == os.environ["HF_HOME"]
    assert constants.HF_HOME.startswith(os.environ["CLIPFUSE_CACHE"])
