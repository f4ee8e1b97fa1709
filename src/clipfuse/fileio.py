"""Writing user-facing files: atomically, next to their target, with one-line errors.

Every artefact clipfuse writes (checkpoints, ONNX models, pretrained folders, predictions,
configs, metrics and reports) goes through :func:`atomic_write`: the data is written to a
hidden temporary file in the target's own folder (``.<name>.<random>.partial<suffix>``),
flushed to disk, then renamed over the target with ``os.replace``. A reader sees the old
file or the new one, never half of one; a failed write removes its temporary file and leaves
the old file as it was. A process killed mid-write leaves only the hidden temporary file,
which :func:`remove_partial_files` deletes (``clipfuse train`` does so under its run lock;
``clipfuse export`` and ``save_pretrained`` for the files they replace). Files that belong
together are written with :func:`atomic_write_all`.

File-system errors (a read-only folder, an output path that is a folder, a parent that is a
file, a full disk) become :class:`~clipfuse.errors.ClipfuseError` naming the path.
"""

import errno
import glob
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from clipfuse.errors import ClipfuseError

PARTIAL = ".partial"


def os_error(path: Path, error: OSError, action: str = "write") -> ClipfuseError:
    """A one-line error for a failed file-system operation on ``path``."""
    if isinstance(error, FileExistsError | NotADirectoryError) or error.errno == errno.ENOTDIR:
        parent = next((p for p in path.parents if p.is_file()), path.parent)
        return ClipfuseError(f"cannot {action} {path}: {parent} is a file, not a folder")
    if isinstance(error, IsADirectoryError):
        return ClipfuseError(f"cannot {action} {path}: it is a folder, expected a file path")
    if isinstance(error, PermissionError) or error.errno in (errno.EROFS, errno.EACCES):
        return ClipfuseError(
            f"cannot {action} {path}: permission denied ({error.strerror or 'read-only'}); "
            "choose a folder you can write to"
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        kept = f"; the earlier {path.name} is kept" if path.is_file() else ""
        return ClipfuseError(
            f"cannot {action} {path}: no space left on device{kept}; free some space or "
            "write elsewhere"
        )
    reason = error.strerror or type(error).__name__
    return ClipfuseError(f"cannot {action} {path}: {reason}")


def os_error_behind(error: BaseException) -> OSError | None:
    """The ``OSError`` (with an errno) that ``error`` was raised from or while handling (its
    ``__cause__`` / ``__context__`` chain), or None. A writer that wraps the file's error in its
    own raises such chains: ``torch.save`` into a Python file on a full disk raises
    ``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos ...`` while
    handling the file's ``OSError: [Errno 28] No space left on device``."""
    seen: set[int] = set()
    link = error.__cause__ or error.__context__
    while link is not None and id(link) not in seen:
        if isinstance(link, OSError) and link.errno is not None:
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def prepare_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) and check that files can be written in it,
    before any expensive work; a one-line error when it is a file, under a file, or read-only."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ClipfuseError(f"{what} {path} is a file: expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=f".probe{PARTIAL}"):
            pass
    except OSError as error:
        raise os_error(path, error, f"write the {what}") from error
    return path


def prepare_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that ``path`` can be written (see :func:`prepare_dir`); its folder is created.

    An existing file that this user cannot write (read-only, or immutable / append-only,
    which even root cannot change) is refused, as ``cp`` would: its folder may be writable, so
    the rename of :func:`atomic_write` would replace a read-only file the user protected, or
    fail on an immutable one only after all the work."""
    path = Path(path)
    if path.is_dir():
        raise ClipfuseError(f"{what} {path} is a folder: expected a file path")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ClipfuseError(f"cannot write the {what} {path}: {parent} is a file, not a folder")
    prepare_dir(path.parent, f"folder of the {what}")
    if path.exists() and not os.access(path, os.W_OK):
        mode = path.stat().st_mode
        reason = (
            f"it is read-only ({stat.filemode(mode)})"
            if not mode & stat.S_IWUSR
            else "it cannot be written (immutable or append-only: see lsattr; or another user's)"
        )
        raise ClipfuseError(
            f"cannot replace the {what} {path}: {reason}; make it writable or choose another path"
        )
    return path


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], object], what: str | None = None
) -> Path:
    """Call ``write(temporary_path)``, then move the result over ``path`` atomically.

    The temporary file lies in ``path``'s folder and keeps its suffix (so writers that infer
    the format from the name still work). On any failure it is removed and ``path`` is left
    unchanged; ``OSError`` becomes a one-line :class:`ClipfuseError` (naming the ``what``,
    e.g. "checkpoint", when given).
    """
    return atomic_write_all({path: write}, what)[0]


def atomic_write_all(
    writes: Mapping[str | os.PathLike, Callable[[Path], object]],
    what: str | None = None,
    before_replace: Callable[[], object] | None = None,
) -> list[Path]:
    """:func:`atomic_write` for files that belong together (a model's weights and config):
    every ``write`` runs first, each into its temporary file; only when all succeeded (and
    ``before_replace``, when given, has run: e.g. to keep the old files aside) are the files
    renamed over their targets, one after the other, in the order given. A failure or a kill
    while writing (the slow part) leaves every target as it was; a kill between two renames
    leaves some targets new and the others old (see
    :func:`clipfuse.saved_model.write_pretrained` for a reader that copes)."""
    targets = [prepare_file(path, what or "output file") for path in writes]
    temporaries: list[Path] = []
    target = targets[0]
    try:
        for target, write in zip(targets, writes.values(), strict=True):
            descriptor, name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=f"{PARTIAL}{target.suffix}"
            )
            os.close(descriptor)
            temporaries.append(Path(name))
            write(temporaries[-1])
            # after the write: mkstemp's 0600 (or a writer's own new file) would outlive the rename
            os.chmod(temporaries[-1], 0o666 & ~_umask())
            fsync(temporaries[-1])
        if before_replace is not None:
            before_replace()
        for target, temporary in zip(targets, temporaries, strict=True):
            os.replace(temporary, target)
        for folder in dict.fromkeys(target.parent for target in targets):
            fsync(folder)
    except OSError as error:
        _remove(temporaries)
        raise os_error(target, error, f"write the {what}" if what else "write") from error
    except BaseException:
        _remove(temporaries)
        raise
    return targets


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def partial_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """The temporary files that interrupted :func:`atomic_write` calls left in ``folder``
    (only those of the target ``name`` when given)."""
    folder = Path(folder)
    pattern = f".{glob.escape(name)}.*{PARTIAL}*" if name else f".*{PARTIAL}*"
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def remove_partial_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the leftovers of interrupted writes in ``folder`` (of the target ``name`` only,
    when given; call it only while no other process writes there, e.g. under the run lock, or
    for a target a command replaces); returns what was removed."""
    removed = partial_files(folder, name)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync(path: Path) -> None:
    """Flush the file or folder ``path`` to disk (a folder: the names in it, e.g. a rename)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
