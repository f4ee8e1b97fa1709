"""Lightning's checkpoint I/O with clipfuse's atomic write and one-line read errors.

Lightning writes and reads ``last.ckpt`` through :class:`AtomicCheckpointIO`, so the file is
replaced atomically from a temporary file in its own folder and ``--resume`` on a damaged
file fails with one line. Reading a checkpoint outside training: :mod:`clipfuse.saved_model`.
"""

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from clipfuse.fileio import atomic_write, os_error_behind
from clipfuse.saved_model import CHECKPOINT_KEY, check_checkpoint, torch_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with clipfuse's atomic write (a temporary file next to the
    target, not in ``$TMPDIR``) and one-line read errors (``--resume`` on a damaged file)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        atomic_write(path, lambda temporary: _save(checkpoint, temporary), "checkpoint")

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Also Lightning's own files (ddp_spawn's weight transfer), which have no clipfuse
        entry; a clipfuse checkpoint is checked as :func:`clipfuse.saved_model.read_checkpoint`
        does."""
        checkpoint = torch_load(path)
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
            check_checkpoint(Path(path), checkpoint)
        return checkpoint


def _save(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a Python file, so that a failed write (a full disk) raises an
    ``OSError`` with its errno, which :func:`~clipfuse.fileio.atomic_write` reports in one line.

    Given a path, torch reports only ``unexpected pos ...``; given a file, it still raises a
    ``RuntimeError`` (``[enforce fail at inline_container.cc:...] . unexpected pos ...``), but
    while handling the file's ``OSError``, which is raised instead. Other errors are raised as
    they are."""
    with path.open("wb") as file:
        try:
            torch.save(checkpoint, file)
        except RuntimeError as error:
            failed = os_error_behind(error)
            if failed is None:
                raise
            raise OSError(failed.errno, failed.strerror, str(path)) from error
