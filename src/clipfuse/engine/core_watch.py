"""``train.threads: auto`` while a run trains: :class:`clipfuse.threads.CoreWatch` after every
step, and the thread count in the run's logs (``threads``)."""

import lightning as L

from clipfuse.threads import CoreWatch


class FollowFreeCores(L.Callback):
    """Re-chooses torch's thread count as other work on the machine comes and goes."""

    def __init__(self, say: bool = True) -> None:
        self.say = say
        self.watch: CoreWatch | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.watch = CoreWatch(say=self.say and trainer.is_global_zero)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        threads = self.watch.check()
        pl_module.log("threads", float(threads), on_step=True, on_epoch=False, batch_size=1)
