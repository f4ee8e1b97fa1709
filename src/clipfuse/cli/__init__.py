"""The ``clipfuse`` command: parses arguments and calls into the packages; holds no logic.

One module per command group (``training``, ``inference``, ``measure``, ``data``), each with
its parsers and the handlers they dispatch to."""

import argparse
import sys

from clipfuse.cli.data import add_data
from clipfuse.cli.inference import add_export, add_predict_and_serve
from clipfuse.cli.measure import add_bench, add_flops
from clipfuse.cli.training import add_eval_vocab, add_experiment, add_train_and_eval
from clipfuse.errors import ClipfuseError, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipfuse", description="Language-guided lightweight semantic segmentation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = (add_train_and_eval, add_eval_vocab, add_predict_and_serve, add_flops, add_bench)
    for add in (*groups, add_export, add_experiment, add_data):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ClipfuseError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside a training, which handles its own
        print(f"error: interrupted (Ctrl-C) during clipfuse {args.command}", file=sys.stderr)
        return 130
    return 0
