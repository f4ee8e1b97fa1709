"""Where shared data lives: an environment variable, then ``../shared``; what stands in for
a ``shared:`` file that is absent (a clone without the shared folder) is
:mod:`clipfuse.sources`'s choice."""

import os
from pathlib import Path

SHARED_ENV = "CLIPFUSE_SHARED"
DATA_ENV = "CLIPFUSE_DATA"
CACHE_ENV = "CLIPFUSE_CACHE"


def shared_root() -> Path:
    """The shared folder: ``$CLIPFUSE_SHARED`` or ``../shared`` beside the repository root."""
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV]).expanduser()
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared"
        if (parent / "pyproject.toml").exists() and candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared"


def data_roots() -> list[Path]:
    """Candidate data roots in search order: ``$CLIPFUSE_DATA``, ``<shared>/data``."""
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser())
    roots.append(shared_root() / "data")
    return roots


def cache_dir() -> Path:
    """Cache for downloads and text embeddings: ``$CLIPFUSE_CACHE`` or ``~/.cache/clipfuse``."""
    path = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "clipfuse")).expanduser()
    return path
