"""Help texts and argument plumbing shared by the command groups."""

import argparse

OVERRIDES_HELP = "config overrides such as model.method=convformer train.max_steps=200"
CONFIG_HELP = "a YAML config file, or the name of a shipped config (see clipfuse configs)"
MODEL_HELP = (
    "a model folder (save_pretrained), a training .ckpt or a Hugging Face Hub id (owner/name, "
    "downloaded once into the hub cache)"
)
DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available)"
SIZE = {"type": int, "nargs": 2, "metavar": ("H", "W")}


def pick(args: argparse.Namespace, *names: str) -> dict:
    """The parsed options ``names`` as keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}
