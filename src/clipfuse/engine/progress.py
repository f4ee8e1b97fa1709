"""Plain progress lines for a run whose output goes to a file or a pipe, where a progress
bar prints nothing readable, and the training wall clock of a run that may be resumed."""

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLines(L.Callback):
    """Every ``every`` optimiser steps, one line on stdout (rank 0):
    ``step 20/140  loss 1.2345  lr 1.00e-03  9.8 img/s  ETA 3m25s``.

    Images/s and the ETA are measured over the steps since the previous line.
    """

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self._start: tuple[float, int] | None = None
        self._images = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.perf_counter(), trainer.global_step)
        self._images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._images += batch[0].shape[0] * trainer.world_size
        step = trainer.global_step
        if step % self.every != 0 or self._start is None or not trainer.is_global_zero:
            return
        started, first_step = self._start
        elapsed = time.perf_counter() - started
        steps = max(step - first_step, 1)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        remaining = max(trainer.max_steps - step, 0) * elapsed / steps
        print(
            f"step {step}/{trainer.max_steps}  loss {float(loss):.4f}  lr {lr:.2e}  "
            f"{self._images / elapsed:.1f} img/s  ETA {_duration(remaining)}",
            file=sys.stdout,
            flush=True,
        )
        self._start = (time.perf_counter(), step)
        self._images = 0


class StepProgressBar(RichProgressBar):
    """Lightning's progress bar for step-budgeted runs: "Epoch 3", not "Epoch 3/-2" (with
    ``max_steps`` Lightning sets ``max_epochs`` to -1)."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        return f"{description:{len(self.validation_description)}}"


class WallClock(L.Callback):
    """Training wall time, carried across resumptions in the checkpoint's callback state."""

    def __init__(self) -> None:
        self.previous = 0.0  # seconds spent before the checkpoint this run resumed from
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far, earlier attempts up to their last checkpoint included."""
        return self.previous + time.perf_counter() - self.start

    def state_dict(self) -> dict:
        return {"seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.previous = float(state_dict.get("seconds", 0.0))
