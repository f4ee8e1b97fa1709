"""The options every command spells the same way, and the parser that suggests a fix for a
misspelled one.

One name per concept: ``--model`` (a trained model: folder, ``.ckpt``, Hub id), ``--config``
(a YAML file or a shipped config's name), ``--device`` (``auto``: CUDA when available, else
the CPU), ``--size H W`` and positional ``section.key=value`` overrides. :class:`Parser`
reports a bad command line in one line on stderr, with the closest option or command
(:func:`difflib.get_close_matches`), and exits with status 2 as argparse does.
"""

import argparse
import copy
import difflib
import re
import sys

OVERRIDES_HELP = "config overrides such as model.method=convformer train.max_steps=200"
CONFIG_HELP = "a YAML config file, or the name of a shipped config (see clipfuse configs)"
MODEL_HELP = (
    "a model folder (save_pretrained), a training .ckpt or a Hugging Face Hub id (owner/name, "
    "downloaded once into the hub cache)"
)
DEVICE_HELP = "auto (default: CUDA when available, else the CPU), cpu, cuda or cuda:N"
SIZE = {"type": int, "nargs": 2, "metavar": ("H", "W")}
AUTO = "auto"
# Names an option had before the commands shared one vocabulary: still parsed, never shown.
HIDDEN_ALIASES = {"--checkpoint": "--model", "--configs": "--config"}
# ``section.key=value``: what tells an override from a config name in ``bench --config``.
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")
_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class _Formatter(argparse.HelpFormatter):
    """argparse's help, without the :data:`HIDDEN_ALIASES`."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [name for name in action.option_strings if name not in HIDDEN_ALIASES]
        if shown != action.option_strings:
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` (its sub-commands too) whose errors are one line
    naming the command, with "did you mean" for an unknown option or command."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self.set_defaults(parser=self)  # the innermost command's parser wins (see main)
        self._argv: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = self.suggestion(message)
        for alias in HIDDEN_ALIASES:  # argparse names an option by all its names
            message = message.replace(f"/{alias}", "")
        print(f"error: {self.prog}: {message}{hint} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def suggestion(self, message: str) -> str:
        """``"; did you mean X?"`` for the first unknown option or command, else ``""``."""
        choice = _CHOICE.search(message)
        if choice:
            word, choices = choice.group(1), re.findall(r"'([^']*)'", choice.group(2))
        else:
            known = [name for name in self._option_string_actions if name not in HIDDEN_ALIASES]
            unknown = [
                arg.split("=", 1)[0]
                for arg in self._argv
                if arg.startswith("-") and not _number(arg) and arg != "--"
            ]
            unknown = [name for name in unknown if name not in self._option_string_actions]
            if not unknown:
                return ""
            word, choices = unknown[0], known
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""


def _number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


def add_model(parser: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    """``--model MODEL`` (required; hidden alias ``--checkpoint``)."""
    parser.add_argument(
        "--model", "--checkpoint", dest="model", required=True, metavar="MODEL", help=help
    )


def add_config(parser: argparse.ArgumentParser, many: bool = False, **kwargs) -> None:
    """``--config FILE|NAME`` (``many``: one or more; hidden alias ``--configs``)."""
    names = ("--config", "--configs") if many else ("--config",)
    nargs = {"nargs": "+", "metavar": "CONFIG"} if many else {"metavar": "CONFIG"}
    parser.add_argument(*names, dest="config", **nargs, **{"help": CONFIG_HELP, **kwargs})


def add_overrides(parser: argparse.ArgumentParser, help: str = OVERRIDES_HELP) -> None:
    """Positional ``section.key=value`` overrides (any number)."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=help)


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default ``auto``: :func:`clipfuse.inference.predict.resolve_device`)."""
    parser.add_argument("--device", default=AUTO, help=DEVICE_HELP)


def add_size(parser: argparse.ArgumentParser, help: str) -> None:
    """``--size H W`` (default None: the command's own, said in ``help``)."""
    parser.add_argument("--size", **SIZE, help=help)


def split_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    """``values`` of an option taking several configs, as (configs, overrides): a
    ``section.key=value`` after the configs is an override (``--config A B train.lr=0.1``)."""
    overrides = [value for value in values if OVERRIDE.match(value)]
    return [value for value in values if not OVERRIDE.match(value)], overrides


def pick(args: argparse.Namespace, *names: str) -> dict:
    """The parsed options ``names`` as keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}
