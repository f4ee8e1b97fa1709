"""``clipfuse configs``: the shipped configs, usable by name in ``--config``."""

import argparse

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
