"""What ``clipfuse train --resume`` checks before it continues a run from ``last.ckpt``.

The checks ``clipfuse eval``, ``predict`` and :func:`clipfuse.load` make (a damaged, foreign or
pickled file, an unknown format version, weights that do not fit the config), and that the
checkpoint belongs to the run being continued: the same class names, the same settings as the
run's config (apart from those a resume may change) and no more steps than ``train.max_steps``.
Each refusal is one line naming the file and what differs, before anything is written.
"""

from collections.abc import Sequence
from pathlib import Path

from clipfuse.config import changed_keys
from clipfuse.errors import ClipfuseError, one_line
from clipfuse.models import Segmentor
from clipfuse.saved_model import load_weights, read_checkpoint, unpack_checkpoint

TRAINING_STATE = ("global_step", "optimizer_states", "lr_schedulers", "loops")


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def check_resumable(
    last: Path, config: dict, class_names: list[str], model: Segmentor, may_change: Sequence[str]
) -> None:
    """Refuse to continue the run of ``config`` (its dataset's ``class_names``, its freshly
    built ``model``) from ``last`` unless it is that run's checkpoint; ``may_change`` lists
    the config keys a resume may change."""
    checkpoint = read_checkpoint(last)
    try:
        saved_config, saved_names, state = unpack_checkpoint(checkpoint)
    except ClipfuseError as error:
        raise ClipfuseError(f"checkpoint {last}: {one_line(error)}") from error
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if missing:
        raise ClipfuseError(
            f"checkpoint {last} holds no training state ({', '.join(missing)} missing): it "
            "cannot be resumed (evaluate or export it instead)"
        )
    run_config = last.parent.parent / "config.yaml"
    if saved_names != class_names:
        raise ClipfuseError(
            f"cannot resume from {last}: it was trained on {len(saved_names)} classes "
            f"({_listed(saved_names)}), the dataset of {run_config} has {len(class_names)} "
            f"({_listed(class_names)})"
        )
    changed = {
        key: change
        for key, change in changed_keys(saved_config, config).items()
        if key not in may_change
    }
    if changed:
        listed = ", ".join(f"{key} ({old!r} -> {new!r})" for key, (old, new) in changed.items())
        raise ClipfuseError(
            f"cannot resume from {last}: it was written with other settings than {run_config}: "
            f"{listed} (another run's checkpoint, or an edited config.yaml?)"
        )
    step, max_steps = checkpoint["global_step"], config["train"]["max_steps"]
    if step > max_steps:
        raise ClipfuseError(
            f"cannot resume from {last}: it is at step {step}, beyond train.max_steps "
            f"{max_steps}: pass train.max_steps={step} or more"
        )
    load_weights(model, state, f"checkpoint {last} does not fit {run_config}")
