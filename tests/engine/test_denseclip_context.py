"""DenseCLIP's learnable context tokens train through a real (tiny) CLIP text tower, and are
announced as off with a precomputed bank."""

from helpers import tiny_config

from clipfuse.engine import train
from clipfuse.saved_model import load_checkpoint


def test_denseclip_learns_context_tokens_through_open_clip(
    folder_dataset, tmp_path, open_clip_spec
):
    config = tiny_config(folder_dataset, "denseclip")
    config["text"].update(encoder=open_clip_spec, learnable_context=4)
    train(config, tmp_path / "run")
    _, _, state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    context = [k for k in state if k.endswith("prompt_encoder.context")]
    assert len(context) == 1 and state[context[0]].shape[0] == 4
    tower = [k for k in state if "prompt_encoder.tower" in k]
    assert tower, "the frozen tower travels with the checkpoint so it can be evaluated anywhere"


def test_context_tokens_are_announced_off_with_a_bank(folder_dataset, tmp_path, capsys):
    config = tiny_config(folder_dataset, "denseclip")
    config["text"]["learnable_context"] = 8  # text.encoder is random:32, a fixed-vector encoder
    train(config, tmp_path / "run")
    assert "learnable context tokens are off" in capsys.readouterr().err
