"""Reading and writing training checkpoints: one-line errors, atomic writes.

Checkpoints are read with ``torch.load(weights_only=True)`` only: a file holding anything
other than tensors and plain data is refused, never unpickled. Lightning writes and reads
them through :class:`AtomicCheckpointIO`, so ``last.ckpt`` is replaced atomically from a
temporary file in its own folder and ``--resume`` on a damaged file fails with one line.
"""

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.fileio import atomic_write

CHECKPOINT_KEY = "clipfuse"
# 2: Conv-Former's text_scale exists (checkpoints without a version were trained without it)
CHECKPOINT_VERSION = 2
_EXPECTED = "expected a .ckpt written by clipfuse train"


def _read_error(path: Path, error: Exception) -> ClipfuseError:
    """Why ``torch.load`` could not read ``path``, in one line and without torch's advice to
    retry with ``weights_only=False`` (wrong for random bytes, unsafe for a hostile file)."""
    size = path.stat().st_size
    if size == 0:
        return ClipfuseError(f"checkpoint {path} is empty (0 bytes): {_EXPECTED}")
    with path.open("rb") as file:
        zip_magic = file.read(4) == b"PK\x03\x04"
    if zip_magic and not zipfile.is_zipfile(path):
        return ClipfuseError(
            f"checkpoint {path} is truncated or damaged ({size:,} bytes, an incomplete archive): "
            f"{_EXPECTED}; was it copied or written completely?"
        )
    if isinstance(error, pickle.UnpicklingError) and zip_magic:
        return ClipfuseError(
            f"checkpoint {path} holds Python objects other than tensors and plain data: "
            "refused (loading it could run code; clipfuse checkpoints hold only those)"
        )
    return ClipfuseError(f"checkpoint {path} is not a PyTorch checkpoint: {_EXPECTED}")


def _load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with one-line errors."""
    if not path.is_file():
        raise ClipfuseError(f"checkpoint {path} not found: {_EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise _read_error(path, error) from error


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The whole checkpoint dict (tensors on the CPU), checked to be a clipfuse checkpoint of
    a format version this clipfuse reads."""
    path = Path(path)
    checkpoint = _load(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
        raise ClipfuseError(
            f"checkpoint {path} was not written by clipfuse (no '{CHECKPOINT_KEY}' entry)"
        )
    _check_meta(path, checkpoint)
    return checkpoint


def _check_meta(path: Path, checkpoint: dict[str, Any]) -> None:
    meta = checkpoint[CHECKPOINT_KEY]
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise ClipfuseError(
            f"checkpoint {path} has format version {version!r}; this clipfuse reads versions 1 "
            f"to {CHECKPOINT_VERSION} (a newer clipfuse wrote it? upgrade clipfuse)"
        )
    missing = [key for key in ("config", "class_names") if key not in meta]
    if "state_dict" not in checkpoint:
        missing.append("state_dict")
    if missing:
        raise ClipfuseError(f"checkpoint {path} lacks {', '.join(missing)}: {_EXPECTED}")


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], fits: str) -> None:
    """Load ``state`` into ``model`` exactly; ``fits`` starts the one-line error
    ("checkpoint X does not fit its config") for missing, unexpected or misshapen tensors."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshapen = [
        f"{key} is {tuple(state[key].shape)}, the config's model has {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    if missing or unexpected or misshapen:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} tensors {missing[:3]}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} {unexpected[:3]}")
        if misshapen:
            problems.append(f"{len(misshapen)} of another shape ({'; '.join(misshapen[:3])})")
        raise ClipfuseError(f"{fits}: {', '.join(problems)}")
    model.load_state_dict(state)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with clipfuse's atomic write (a temporary file next to the
    target, not in ``$TMPDIR``) and one-line read errors (``--resume`` on a damaged file)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        atomic_write(path, lambda temporary: torch.save(checkpoint, temporary))

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Also Lightning's own files (ddp_spawn's weight transfer), which have no clipfuse
        entry; a clipfuse checkpoint is checked as :func:`read_checkpoint` does."""
        path = Path(path)
        checkpoint = _load(path)
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
            _check_meta(path, checkpoint)
        return checkpoint
