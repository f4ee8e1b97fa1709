"""How a training stops when it cannot go on: a diverged loss, SIGTERM or Ctrl-C.

* A non-finite loss stops the run at that step with :class:`TrainingDiverged`, before the
  periodic checkpoint could write the diverged weights (:class:`SafeStop` runs before
  Lightning's ``ModelCheckpoint``, which Lightning always calls last); a checkpoint whose
  weights are not finite is refused as well. ``last.ckpt`` keeps the last finite step.
* SIGTERM (``kill``, a scheduler's pre-emption) is Lightning's: its handler notes the signal
  and training stops at the end of the step (:class:`SafeStop` raises Lightning's
  ``SIGTERMException`` there, where periodic checkpoints are taken) or at the next
  validation batch. Ctrl-C (SIGINT) is forwarded to that handler, so it stops the same way
  (a second Ctrl-C stops at once, without saving). :class:`SafeStop` then writes
  ``last.ckpt`` (atomically) and :meth:`SafeStop.signals` turns Lightning's exit into
  :class:`TrainingInterrupted` (exit status 143 for SIGTERM, 130 for SIGINT).
* DataLoader workers ignore both signals (:func:`worker_init`): the training process stops
  the run and ends them, so a signal sent to the whole process group does not kill a worker
  under the running training.
"""

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from clipfuse.errors import ClipfuseError, one_line

# Lightning logs "[rank: 0] Received SIGTERM: 15"; TrainingInterrupted says what happened.
logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").addFilter(
    lambda record: "Received SIGTERM" not in str(record.msg)
)


class TrainingDiverged(ClipfuseError):
    """The loss (or the weights) stopped being finite: the run ended without saving them."""


class TrainingInterrupted(ClipfuseError):
    """SIGTERM or Ctrl-C stopped the run after saving ``last.ckpt``; the exit status is the
    shell's for that signal (128 + its number)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def worker_init(worker_id: int) -> None:
    """A DataLoader worker leaves SIGTERM and Ctrl-C to the training process (which ends its
    workers when it stops). Its random draws need no seeding here: every sample's transform is
    reseeded from the run's data stream (:mod:`clipfuse.data.sampling`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    return [
        name
        for name, tensor in state.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


class SafeStop(L.Callback):
    """Stops a run on a non-finite loss without checkpointing it, and saves ``last`` when a
    signal stops it (see the module docstring)."""

    def __init__(self, last: Path) -> None:
        self.last = last
        self.saved_step: int | None = None  # the step last.ckpt holds
        self.step = 0  # where the run stopped
        self.signal: int | None = None  # SIGINT when Ctrl-C was forwarded
        self.save_error: ClipfuseError | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:  # resumed from last.ckpt
            self.saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            finite = bool(torch.isfinite(loss.detach()).all())
            if not trainer.strategy.reduce_boolean_decision(finite, all=True):
                value = "not finite on another process" if finite else float(loss.detach())
                raise TrainingDiverged(self._diverged(trainer, f"the loss is {value}"))
        if trainer.received_sigterm:  # stop where periodic checkpoints are taken
            raise SIGTERMException

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        bad = _non_finite(checkpoint.get("state_dict", {}))
        if bad:
            raise TrainingDiverged(
                self._diverged(trainer, f"{len(bad)} weight tensors are not finite ({bad[0]}, ...)")
            )
        self.saved_step = trainer.global_step

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.step = trainer.global_step
        if not isinstance(exception, SIGTERMException) or self.saved_step == self.step:
            return
        kept = self.saved_step
        try:
            trainer.save_checkpoint(self.last, weights_only=False)
        except ClipfuseError as error:  # reported by TrainingInterrupted
            self.save_error, self.saved_step = error, kept

    def _diverged(self, trainer: L.Trainer, what: str) -> str:
        if self.saved_step is None:
            kept = "no checkpoint was written yet"
        else:
            kept = f"{self.last} keeps step {self.saved_step}, the last finite one"
        return (
            f"training diverged at step {trainer.global_step}: {what}; stopped before saving the "
            f"diverged weights ({kept}): lower train.lr or check the data, and train into "
            "another --out"
        )

    def _interrupted(self, out_dir: Path, saved: bool = True) -> TrainingInterrupted:
        signum = self.signal or signal.SIGTERM
        stopped = f"training interrupted at step {self.step} ({signal.Signals(signum).name})"
        resume = f"resume with clipfuse train --out {out_dir} --resume"
        if saved and self.save_error is None:
            return TrainingInterrupted(
                f"{stopped}: checkpoint saved to {self.last}; {resume}", signum
            )
        why = one_line(self.save_error) if saved else "a second Ctrl-C stopped it without saving"
        kept = "no checkpoint" if self.saved_step is None else f"step {self.saved_step}"
        return TrainingInterrupted(
            f"{stopped}: {why}; {self.last.parent} keeps {kept}; {resume}", signum
        )

    @contextmanager
    def signals(self, out_dir: Path) -> Iterator[None]:
        """While the run trains and validates: Ctrl-C is forwarded to Lightning's SIGTERM
        handler, and Lightning's SIGTERM exit becomes :class:`TrainingInterrupted`."""
        forward = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )  # an ignored SIGINT (a background job) stays ignored
        if forward:
            signal.signal(signal.SIGINT, self._forward_sigint)
        try:
            yield
        except SIGTERMException:
            raise self._interrupted(out_dir) from None
        except (KeyboardInterrupt, SystemExit):  # SystemExit: Lightning's, after a Ctrl-C
            if self.signal != signal.SIGINT:
                raise
            raise self._interrupted(out_dir, saved=False) from None
        finally:
            if forward:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def _forward_sigint(self, signum: int, frame) -> None:
        lightning_handler = signal.getsignal(signal.SIGTERM)
        if self.signal is not None or not callable(lightning_handler):
            raise KeyboardInterrupt  # a second Ctrl-C, or outside Lightning's fit / validate
        self.signal = signal.SIGINT
        lightning_handler(signal.SIGTERM, frame)
