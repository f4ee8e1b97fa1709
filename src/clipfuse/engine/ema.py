"""``train.ema_decay``: an exponential moving average of the weights (Lightning's
:class:`EMAWeightAveraging`). Validation and every checkpoint's ``state_dict`` (what eval,
export and ``clipfuse.load`` read) hold the average; the checkpoint also keeps the trained
weights (``current_model_state``; ``clipfuse eval --trained-weights`` scores them) and the average's step, so ``--resume`` continues both."""

from lightning.pytorch.callbacks import EMAWeightAveraging

from clipfuse.saved_model import TRAINED_STATE_KEY


class EMA(EMAWeightAveraging):
    """Lightning's EMA, except that the checkpoint written after training resumes from the
    trained weights, not from the average Lightning copies into the model when training ends."""

    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay)
        self._trained: dict | None = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._trained = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._trained is not None:
            checkpoint[TRAINED_STATE_KEY] = self._trained
