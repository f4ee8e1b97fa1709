"""The ``clipfuse`` command: argument parsing and dispatch into the packages.

One module per command group (``training``, ``inference``, ``measure``, ``data``), each with
its parsers and the handlers they dispatch to. A handler passes the parsed options on as
keyword arguments (or, as ``eval --split``, as a config override), refuses option
combinations the packages do not take (``train`` with neither ``--config`` nor ``--resume``,
``experiment --report-only`` with ``--only``) and prints what the packages return: JSON with
``--json``, else the package's own table; ``bench --output`` is written here, through
:mod:`clipfuse.fileio`. Building, training, measuring and formatting live in the packages.
:func:`main` turns a :class:`~clipfuse.errors.ClipfuseError` into one line on stderr and its
exit status, and Ctrl-C outside a training into status 130 (a bad command line: one line
and status 2, :class:`~clipfuse.cli.options.Parser`); it first tunes the allocator
(:func:`clipfuse.allocator.keep_freed_memory`)."""

import os
import sys

from clipfuse import __version__
from clipfuse.allocator import keep_freed_memory
from clipfuse.cli.configs import add_configs, add_print_config
from clipfuse.cli.data import add_data
from clipfuse.cli.inference import add_export, add_predict_and_serve
from clipfuse.cli.measure import add_bench, add_flops
from clipfuse.cli.models import add_list_models
from clipfuse.cli.options import Parser
from clipfuse.cli.training import add_eval_vocab, add_experiment, add_train_and_eval
from clipfuse.errors import ClipfuseError, one_line


def build_parser() -> Parser:
    parser = Parser(
        prog="clipfuse", description="Language-guided lightweight semantic segmentation."
    )
    parser.add_argument("--version", action="version", version=f"clipfuse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = (add_train_and_eval, add_eval_vocab, add_predict_and_serve, add_flops, add_bench)
    listings = (add_list_models, add_configs, add_print_config)
    for add in (*groups, add_export, add_experiment, add_data, *listings):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # reported by the command they were given to, with its options to suggest
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    keep_freed_memory()
    try:
        args.func(args)
    except ClipfuseError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside a training, which handles its own
        print(f"error: interrupted (Ctrl-C) during clipfuse {args.command}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`clipfuse configs | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141
    return 0
