"""A record of the batches a run trained on: what makes two runs' comparison strictly paired.

:class:`BatchStream` hashes every training batch (images and masks, as the step received them)
and chains the hashes; the chain's head identifies the whole stream. It is carried across
resumptions in the checkpoint, and written to ``<run>/batch_stream.json`` when training ends:

* ``seeding``: the :data:`clipfuse.seeding.SEEDING_VERSION` of the run;
* ``steps``: how many batches were hashed; ``per_step``: each batch's hash;
* ``stream``: the chained hash of all of them, or ``null`` when part of the stream is unknown
  (a run resumed from a checkpoint without this record).

Rank 0 records its own batches (under DDP the other ranks see other samples).
"""

import hashlib
import json
from pathlib import Path

import lightning as L
import torch

from clipfuse.fileio import atomic_write_text
from clipfuse.seeding import SEEDING_VERSION

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
    """Hashes each training batch; tells a resumed run's sampler where its stream stopped."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / STREAM_FILE
        self.digests: list[str] = []
        self.complete = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step != len(self.digests):  # resumed from a checkpoint that lacks this record
            self.digests, self.complete = [], False

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
        }

    def state_dict(self) -> dict:
        return {"digests": list(self.digests), "complete": self.complete}

    def load_state_dict(self, state_dict: dict) -> None:
        self.digests = list(state_dict["digests"])
        self.complete = bool(state_dict["complete"])
