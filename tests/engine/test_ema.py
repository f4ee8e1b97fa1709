"""``train.ema_decay``: validation and the saved model use the averaged weights; resume
continues the average."""

import lightning as L
import pytest
import torch
from helpers import tiny_config
from test_train import CrashAt

from clipfuse.config import load_config
from clipfuse.engine import evaluate, train
from clipfuse.engine.ema import EMA
from clipfuse.errors import ClipfuseError
from clipfuse.saved_model import load_checkpoint


def saved(out):
    return torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)


class AverageAtStart(L.Callback):
    """Records the EMA's state when (resumed) training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
        self.n_averaged = int(ema._average_model.n_averaged)
        self.state = {k: v.clone() for k, v in ema._average_model.module.state_dict().items()}


def test_ema_changes_the_saved_weights_and_resume_restores_it(folder_dataset, tmp_path):
    train(tiny_config(folder_dataset, max_steps=4, threads=1), tmp_path / "plain")
    train(tiny_config(folder_dataset, max_steps=4, threads=1, ema_decay=0.5), tmp_path / "ema")
    plain, ema = saved(tmp_path / "plain"), saved(tmp_path / "ema")
    # the trained weights are the plain run's; the saved model is their average
    for key, value in plain["state_dict"].items():
        torch.testing.assert_close(ema["current_model_state"][key], value)
    assert any(not torch.equal(v, ema["state_dict"][k]) for k, v in plain["state_dict"].items())
    # --trained-weights reads them back: the model and the scores of the run without the average
    plain_path, ema_path = (
        tmp_path / run / "checkpoints" / "last.ckpt" for run in ("plain", "ema")
    )
    trained = load_checkpoint(ema_path, trained=True)[2]
    for key, value in load_checkpoint(plain_path)[2].items():
        torch.testing.assert_close(trained[key], value)
    scores = evaluate(ema_path, quiet=True, trained=True)
    assert scores["mIoU"] == pytest.approx(evaluate(plain_path, quiet=True)["mIoU"])
    assert load_checkpoint(plain_path, trained=True)[2].keys() == trained.keys()
    out = tmp_path / "crashed"
    config = tiny_config(folder_dataset, max_steps=4, threads=1, ema_decay=0.5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, out, callbacks=[CrashAt(3)])
    at_step_2 = saved(out)
    probe = AverageAtStart()
    train(None, out, resume=True, callbacks=[probe])
    assert probe.n_averaged == 2
    for key, value in at_step_2["state_dict"].items():
        torch.testing.assert_close(probe.state[key], value)


@pytest.mark.parametrize("value", ["1.0", "0", "fast"])
def test_bad_ema_decay_is_a_one_line_error(value):
    with pytest.raises(ClipfuseError, match="ema_decay") as error:
        load_config(None, [f"train.ema_decay={value}"])
    assert "\n" not in str(error.value)
