"""``clipfuse configs`` (the shipped configs, usable by name in ``--config``) and
``clipfuse print-config`` (a config as it runs)."""

import argparse

from clipfuse.cli.options import add_config, add_overrides
from clipfuse.errors import ClipfuseError


def _configs(args: argparse.Namespace) -> None:
    from clipfuse.config_files import config_names, list_configs

    rows = list_configs(args.pattern)
    if not rows:
        raise ClipfuseError(
            f"no shipped config matches {args.pattern!r}: `clipfuse configs` lists all "
            f"{len(config_names())}"
        )
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {text}".rstrip() for name, text in rows))


def _print_config(args: argparse.Namespace) -> None:
    import yaml

    from clipfuse.config import load_config

    config = load_config(args.config, args.overrides)
    print(yaml.safe_dump(config, sort_keys=False), end="")


def add_configs(commands) -> None:
    """``configs [PATTERN]``."""
    parser = commands.add_parser(
        "configs", help="the shipped configs, by name (for --config NAME) and description"
    )
    parser.add_argument(
        "pattern",
        nargs="?",
        help="a word in the name ('camvid') or a shell-style pattern ('plain_*_ade20k_*')",
    )
    parser.set_defaults(func=_configs)


def add_print_config(commands) -> None:
    """``print-config --config X [overrides]``."""
    parser = commands.add_parser(
        "print-config",
        help="a config as it runs, as YAML: its _base_ files merged, overrides applied, "
        "every default filled in",
    )
    add_config(parser, required=True)
    add_overrides(parser)
    parser.set_defaults(func=_print_config)
