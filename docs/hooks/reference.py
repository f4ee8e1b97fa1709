"""MkDocs hook: the generated references of the user guide.

A page holding ``<!-- CONFIG-REFERENCE -->`` gets one table per section of the run config, built
from :mod:`clipfuse.config_schema` (every key, its type, its default and what it accepts); a page
holding ``<!-- CLI-REFERENCE -->`` gets the ``--help`` of every command of
:func:`clipfuse.cli.build_parser`. Both are made at build time, so they follow the code.
"""

import argparse
import re
import json
import os
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

CONFIG_MARKER = "<!-- CONFIG-REFERENCE -->"
CLI_MARKER = "<!-- CLI-REFERENCE -->"
MODELS_MARKER = "<!-- MODELS-REFERENCE -->"
HELP_COLUMNS = "100"


def _type_name(annotation: Any) -> str:
    """``annotation`` as a reader writes it: ``int``, ``list[float]``, ``str | None``."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = dict.fromkeys(_type_name(argument) for argument in arguments)
        return " | ".join(names)
    if origin is typing.Literal:
        return " | ".join(json.dumps(argument) for argument in arguments)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        name = {"Sequence": "list", "dict": "mapping"}.get(name, name)
        inner = ", ".join(_type_name(argument) for argument in arguments)
        return f"{name}[{inner}]" if inner else name
    if annotation is type(None):
        return "None"
    name = getattr(annotation, "__name__", str(annotation))
    return {"StrictInt": "int", "StrictStr": "str", "StrictBool": "bool"}.get(name, name)


def _choices() -> dict[str, list[str]]:
    """The registered names a key takes (its description only says "a method")."""
    from clipfuse.data import DATASETS
    from clipfuse.decoders import DECODERS
    from clipfuse.models import METHODS

    return {
        "model.method": list(METHODS),
        "model.decoder": list(DECODERS),
        "data.dataset": list(DATASETS),
    }


def config_rows() -> Iterator[tuple[str, str, str, str, str]]:
    """(section, key, type, default, accepted values) of every key of the run config."""
    from clipfuse.config_schema import RunConfig, default_config

    defaults = default_config()
    choices = _choices()
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            yield "", name, _type_name(field.annotation), json.dumps(defaults[name]), (
                field.description or ""
            )
            continue
        for key, sub in section.model_fields.items():
            accepts = sub.description or ""
            if f"{name}.{key}" in choices:
                accepts += ": " + ", ".join(f"`{choice}`" for choice in choices[f"{name}.{key}"])
            yield name, key, _type_name(sub.annotation), json.dumps(defaults[name][key]), accepts


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _prose(docstring: str | None) -> str:
    """The first paragraph of ``docstring``, Sphinx roles (``:func:`x```) as code."""
    first = (docstring or "").split("\n\n")[0]
    return " ".join(re.sub(r":\w+:`~?([^`]+)`", r"`\1`", first).split())


def config_reference() -> str:
    """The Markdown tables of every config key, one section after another."""
    from clipfuse.config_schema import RunConfig

    lines: list[str] = []
    current = None
    for section, key, kind, default, accepts in config_rows():
        if section != current:
            current = section
            model = RunConfig.model_fields[section].annotation if section else None
            title = f"`{section}`" if section else "Top level"
            about = _prose(model.__doc__) if model else "Keys outside any section."
            lines += ["", f"## {title}", "", about, ""]
            lines += ["| key | type | default | accepts |", "|---|---|---|---|"]
        name = f"{section}.{key}" if section else key
        row = (f"`{name}`", f"`{_cell(kind)}`", f"`{_cell(default)}`", _cell(accepts))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _commands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, str]]:
    """(command line, --help text) of ``parser``'s commands, sub-commands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub.format_help()
                yield from _commands(sub, f"{prefix} {name}")


def cli_reference() -> str:
    """One section per command, with its ``--help`` text."""
    from clipfuse.cli import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse wraps at the terminal's width
    try:
        parser = build_parser()
        sections = [("clipfuse", parser.format_help()), *_commands(parser, "clipfuse")]
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    lines: list[str] = []
    for command, text in sections:
        lines += ["", f"## `{command}`", "", "```text", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def models_reference() -> str:
    """The registered model variants: name, the shipped config defining it, its description."""
    from clipfuse.config_files import description, shipped_config
    from clipfuse.models.registry import variants

    lines = ["| model | config | what it is |", "|---|---|---|"]
    for variant in variants():
        config = variant.config if isinstance(variant.config, str) else ""
        about = description(shipped_config(config)) if config else ""
        lines.append(f"| `{variant.name}` | `{config}` | {_cell(about)} |")
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs' hook: the markers replaced by their references."""
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if MODELS_MARKER in markdown:
        markdown = markdown.replace(MODELS_MARKER, models_reference())
    return markdown
