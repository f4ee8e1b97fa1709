"""``clipfuse list-models``: parsing and dispatch."""

import argparse

from clipfuse.errors import ClipfuseError


def _list_models(args: argparse.Namespace) -> None:
    from clipfuse.models.registry import list_models, variants

    rows = [(v.name, v.config if isinstance(v.config, str) else "") for v in variants(args.pattern)]
    if not rows:
        raise ClipfuseError(
            f"no model matches {args.pattern!r}: `clipfuse list-models` lists all "
            f"{len(list_models())}"
        )
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {config}".rstrip() for name, config in rows))


def add_list_models(commands) -> None:
    """``list-models [PATTERN]``."""
    parser = commands.add_parser(
        "list-models",
        help="the named models (for clipfuse.create_model) and the config defining each",
    )
    parser.add_argument(
        "pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'convformer_*'"
    )
    parser.set_defaults(func=_list_models)
