"""A run config's validation error as one line: ``config key <key> is <value>: expected
<what it accepts>`` (:func:`clipfuse.config_schema.validate_config`)."""

import reprlib
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel

# An error whose message says what is allowed ("expected" is appended to the key and value),
# and one that is the whole message.
EXPECTED, MESSAGE = "clipfuse_expected", "clipfuse_message"


def _shown(value: Any) -> str:
    """A value as the error shows it: a string quoted, anything else as YAML writes it (the
    override ``text.encoder=random:`` is the mapping ``{random: null}``), cut at 80 letters."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:  # a value that shares parts is written with YAML anchors, never expanded
            text = yaml.safe_dump(value, default_flow_style=True, width=10**9)
            text = text.strip().removesuffix("...").strip()
        except yaml.YAMLError:
            text = reprlib.repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _lookup(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def describe_error(error: Mapping, config: Mapping, root: type[BaseModel]) -> tuple[str, str]:
    """(the dotted key, the one-line message) of one pydantic error of ``config``, validated
    by ``root`` (a model whose fields are the config's sections)."""
    if error["type"] == MESSAGE:
        return ".".join(str(part) for part in error["loc"]), error["msg"]
    names = [part for part in error["loc"] if isinstance(part, str)]
    field = root.model_fields.get(names[0])
    section = field.annotation if field is not None else None
    key = names[0]
    if isinstance(section, type) and issubclass(section, BaseModel) and len(names) > 1:
        key, field = f"{names[0]}.{names[1]}", section.model_fields.get(names[1])
    if error["type"] == EXPECTED:
        expected = error["msg"]
    else:
        expected = field.description if field is not None and field.description else error["msg"]
    return key, f"config key {key} is {_shown(_lookup(config, key))}: expected {expected}"
