"""What a run folder (``clipfuse train --out``) says about its run: ``config.yaml``, the full
config the run trains with as this machine resolves it (:func:`resolved_config`), and
``format.json``, the format version it was written at (:data:`clipfuse.config.FORMAT_VERSION`,
as checkpoints carry it).

A folder's config is read back as a checkpoint's is: upgraded from its format version to
today's keys (:func:`clipfuse.config.upgrade_config`), so a folder trained before a default
changed resumes with the model its checkpoint holds. Folders written before they recorded
their version (up to version 4) are read at the version of their checkpoint, or at 4 when
they have none (nothing was trained there yet).

A run given no folder gets a new one named by its config and the time it started
(:func:`new_run_folder`), so a second run never collides with the first.
"""

import json
import os
import time
from pathlib import Path

from clipfuse.config import FORMAT_VERSION, changed_keys, dump_config, load_config
from clipfuse.engine.class_weight import with_saved_class_weight
from clipfuse.engine.lock import LOCK_FILE
from clipfuse.errors import ClipfuseError
from clipfuse.fileio import atomic_write_text
from clipfuse.precision import with_resolved_precision
from clipfuse.saved_model import check_format_version, checkpoint_version
from clipfuse.seeding import with_resolved_draws

CONFIG_FILE = "config.yaml"
FORMAT_FILE = "format.json"
METRICS_FILE = "metrics.json"  # the last validation's metrics (clipfuse.engine.run)
# The last format version whose run folders did not record it.
UNRECORDED_VERSION = 4
# The folder new_run_folder chose, for the DDP workers Lightning launches by re-running the command.
RUN_FOLDER_VARIABLE = "CLIPFUSE_RUN_FOLDER"


def launching_process() -> bool:
    """Whether this is the process that started the run (not a DDP worker launched for it):
    only that one locks and checks the run folder."""
    return all(int(os.environ.get(name, 0)) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def new_run_folder(config: str | os.PathLike, root: str | os.PathLike = "runs") -> Path:
    """A new, empty folder for a run of ``config`` (a YAML file or a shipped config's name):
    ``root/<config stem>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3`` ... when that is taken.
    A DDP worker (which re-runs the command) gets the folder its launching process chose."""
    if not launching_process() and RUN_FOLDER_VARIABLE in os.environ:
        return Path(os.environ[RUN_FOLDER_VARIABLE])
    stem = Path(config).name.removesuffix(".yaml")
    base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, number = base, 1
    while True:
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:
            number += 1
            folder = base.with_name(f"{base.name}-{number}")
    os.environ[RUN_FOLDER_VARIABLE] = str(folder)
    return folder


def remove_unused_run_folder(folder: Path) -> None:
    """Remove ``folder`` (from :func:`new_run_folder`) if its run stopped before writing
    anything but its lock, so a refused start leaves no empty run behind."""
    if folder.is_dir() and {path.name for path in folder.iterdir()} <= {LOCK_FILE}:
        (folder / LOCK_FILE).unlink(missing_ok=True)
        folder.rmdir()


def resolved_config(config: dict) -> tuple[dict, str | None]:
    """``config`` as this machine runs it, what a run folder records: the seed's text draws
    made explicit (:func:`clipfuse.seeding.with_resolved_draws`) and ``train.precision`` /
    ``train.channels_last`` ``auto`` resolved (:func:`clipfuse.precision.with_resolved_precision`),
    with the note announcing an automatic choice (None when there was none)."""
    return with_resolved_precision(with_resolved_draws(config))


def write_run_config(folder: Path, config: dict) -> None:
    """Write ``config`` into run ``folder`` at this clipfuse's format version (the config
    first: a folder interrupted between the two files is read at its checkpoint's version,
    and an upgraded config reads the same at any version)."""
    dump_config(config, folder / CONFIG_FILE)
    atomic_write_text(folder / FORMAT_FILE, json.dumps({"format_version": FORMAT_VERSION}) + "\n")


def run_format_version(folder: Path) -> int:
    """The format version run ``folder`` was written at (see the module docstring)."""
    path = folder / FORMAT_FILE
    if not path.is_file():
        last = folder / "checkpoints" / "last.ckpt"
        return checkpoint_version(last) if last.exists() else UNRECORDED_VERSION
    try:
        version = json.loads(path.read_text())["format_version"]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        raise ClipfuseError(
            f"{path} is not a run folder's format record ({error!r}): expected "
            '{"format_version": N}'
        ) from error
    check_format_version(str(path), version)
    return version


def read_run_config(folder: Path) -> dict:
    """The config saved in run ``folder``, upgraded to today's keys and validated."""
    return load_config(folder / CONFIG_FILE, format_version=run_format_version(folder))


def changes_from_saved(folder: Path, planned: dict) -> tuple[dict, dict[str, tuple]]:
    """``planned`` (a validated config) as this machine resolves it, and dotted key ->
    (saved, planned) for each setting where it differs from the config saved in run
    ``folder`` (also as this machine resolves it, should it hold an ``auto``). A planned
    ``train.class_weight: balanced`` is the list the run resolved it to (never recounted)."""
    saved = resolved_config(read_run_config(folder))[0]
    planned = with_saved_class_weight(resolved_config(planned)[0], saved)
    return planned, changed_keys(saved, planned)
