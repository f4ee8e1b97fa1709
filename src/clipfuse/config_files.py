"""The configs shipped in the package (``clipfuse/configs/``, package data; the source
checkout's ``configs/`` is a link to it), usable by name from any working directory.

A ``--config`` value (``clipfuse train``, ``bench``, ``flops``, an experiment's ``base``) is a
path when that file exists, else the name of a shipped config, with or without ``.yaml``
(``plain-w128_mobilenetv2_camvid_256x320_5200``): :func:`resolve_config_file`, called once by
:func:`clipfuse.config.load_config`. ``clipfuse configs`` lists them (:func:`list_configs`)."""

import difflib
import fnmatch
from importlib import resources
from pathlib import Path

from clipfuse.errors import ClipfuseError

SUFFIX = ".yaml"


def configs_dir() -> Path:
    """The folder of the shipped configs (inside the installed package)."""
    return Path(str(resources.files("clipfuse") / "configs"))


def config_names() -> list[str]:
    """The names of the shipped configs (file stems; the ``_base_`` files are not runs)."""
    return sorted(path.stem for path in configs_dir().glob(f"*{SUFFIX}"))


def shipped_config(name: str) -> Path:
    """The shipped config called ``name`` (with or without ``.yaml``), else a one-line error
    naming the closest names."""
    stem = name.removesuffix(SUFFIX)
    path = configs_dir() / f"{stem}{SUFFIX}"
    if "/" not in stem and path.is_file():
        return path
    close = difflib.get_close_matches(stem, config_names(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see clipfuse configs"
    raise ClipfuseError(f"config {name!r} is neither a file nor a shipped config: {hint}")


def resolve_config_file(value: str | Path) -> Path:
    """``value`` as a path when that file exists or it names a folder (``runs/a/config.yaml``),
    else the shipped config of that name (:func:`shipped_config`). A documented
    ``configs/<name>.yaml`` that is absent here (another working directory) is the shipped
    config of that name."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if path.parent == Path("configs") and (configs_dir() / path.name).is_file():
        return configs_dir() / path.name
    if len(path.parts) > 1:
        return path
    return shipped_config(str(value))


def description(path: Path) -> str:
    """The first comment line of a config file (its one-line description), else ``""``."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def list_configs(pattern: str | None = None) -> list[tuple[str, str]]:
    """``(name, description)`` of every shipped config whose name matches ``pattern`` (a
    shell-style pattern such as ``*camvid*``; a plain word matches names containing it)."""
    if pattern and not any(char in pattern for char in "*?["):
        pattern = f"*{pattern}*"
    names = [name for name in config_names() if not pattern or fnmatch.fnmatch(name, pattern)]
    return [(name, description(configs_dir() / f"{name}{SUFFIX}")) for name in names]
