"""A record of the batches a run trained on and of its resumptions: what makes two runs'
comparison strictly paired.

:class:`BatchStream` hashes every training batch (images and masks, as the step received them)
and chains the hashes; the chain's head identifies the whole stream. It is carried across
resumptions in the checkpoint, with the state of the global random generators
(:func:`clipfuse.seeding.random_state`: dropout's draws), which a resumed run restores before
its first step, so that it trains as the uninterrupted run does (docs/research/robustness.md,
"Stopping and resuming"). A checkpoint written before clipfuse saved that state resumes with
the generators seeded afresh, announced in one line. The record is written to
``<run>/batch_stream.json`` when training ends:

* ``seeding``: the :data:`clipfuse.seeding.SEEDING_VERSION` of the run;
* ``steps``: how many batches were hashed; ``per_step``: each batch's hash;
* ``stream``: the chained hash of all of them, or ``null`` when part of the stream is unknown
  (a run resumed from a checkpoint without this record);
* ``resumes``: one ``{"step": N, "random_state": restored}`` per resumption, in order;
  ``restored`` is false where the checkpoint held no random state (or the run moved to another
  kind of device): from that step on, the run is not the uninterrupted one.

Rank 0 records its own batches (under DDP the other ranks see other samples); every rank
restores the random state rank 0 saved.
"""

import hashlib
import json
from pathlib import Path

import lightning as L
import torch

from clipfuse.errors import announce
from clipfuse.fileio import atomic_write_text
from clipfuse.seeding import SEEDING_VERSION, random_state, restore_random_state

STREAM_FILE = "batch_stream.json"


def batch_digest(images: torch.Tensor, masks: torch.Tensor) -> str:
    """A short hash of one batch's values (memory layout and device do not matter)."""
    digest = hashlib.blake2b(digest_size=8)
    for tensor in (images, masks):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def chain(digests: list[str]) -> str:
    """The hash of a sequence of batch hashes."""
    return hashlib.blake2b("".join(digests).encode(), digest_size=16).hexdigest()


class BatchStream(L.Callback):
    """Hashes each training batch; carries the random state across resumptions and records
    them (see the module docstring)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / STREAM_FILE
        self.digests: list[str] = []
        self.complete = True
        self.resumes: list[dict] = []
        self.saved_random_state: dict | None = None  # from the checkpoint resumed, if it has one

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step != len(self.digests):  # resumed from a checkpoint that lacks this record
            self.digests, self.complete = [], False
        if trainer.ckpt_path is not None:
            self._restore(trainer, step)

    def _restore(self, trainer: L.Trainer, step: int) -> None:
        """Restore the checkpoint's random state; record the resumption, and announce one
        that cannot continue the uninterrupted run's draws."""
        saved, self.saved_random_state = self.saved_random_state, None
        restored = saved is not None and restore_random_state(saved)
        self.resumes.append({"step": step, "random_state": restored})
        if not restored and trainer.is_global_zero:
            why = (
                "holds no random state (written by an older clipfuse)"
                if saved is None
                else "was written on another kind of device (CPU / CUDA)"
            )
            announce(
                f"resuming at step {step}: the checkpoint {why}, so dropout draws afresh: the "
                "run differs from an uninterrupted one and is recorded as not strictly paired"
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.digests.append(batch_digest(*batch))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            atomic_write_text(self.path, json.dumps(self.summary(), indent=2))

    def summary(self) -> dict:
        return {
            "seeding": SEEDING_VERSION,
            "steps": len(self.digests),
            "stream": chain(self.digests) if self.complete else None,
            "per_step": self.digests,
            "resumes": self.resumes,
        }

    def state_dict(self) -> dict:
        return {
            "digests": list(self.digests),
            "complete": self.complete,
            "resumes": [dict(resume) for resume in self.resumes],
            "random_state": random_state(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.digests = list(state_dict["digests"])
        self.complete = bool(state_dict["complete"])
        # a checkpoint without these keys predates them: its resumptions are unknown
        self.resumes = [dict(resume) for resume in state_dict.get("resumes", [])]
        self.saved_random_state = state_dict.get("random_state")
