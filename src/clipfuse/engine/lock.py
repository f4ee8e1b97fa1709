"""One training per run folder (an exclusive lock on ``<out>/.lock`` held for the run's life),
one ``clipfuse experiment`` per grid folder (``<out>/.experiment.lock``).

The lock is ``fcntl.flock`` on the file, so it is released by the kernel when the process
ends, however it ends (a crash or ``kill -9`` leaves no stale lock). The file names the
holder (pid, host, start time) so that a refused second start can say who has the folder.
"""

import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from clipfuse.errors import ClipfuseError
from clipfuse.fileio import os_error, prepare_dir

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(out_dir):`` creates ``out_dir`` and holds its lock, or raises a one-line
    :class:`ClipfuseError` naming the process that holds it. ``name``: the lock file's name;
    ``kind``: what the folder is and what holds it."""

    def __init__(
        self,
        folder: str | os.PathLike,
        name: str = LOCK_FILE,
        kind: tuple[str, str] = ("run folder", "another training"),
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.kind = kind
        self._descriptor: int | None = None

    def __enter__(self) -> "RunLock":
        folder_kind, holder_kind = self.kind
        prepare_dir(self.folder, folder_kind)
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise os_error(self.path, error, f"create the lock of the {folder_kind}") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 512).decode("utf-8", "replace").strip()
            os.close(descriptor)
            raise ClipfuseError(
                f"{folder_kind} {self.folder} is in use by {holder_kind} "
                f"({holder or 'holder unknown'}): wait for it to end, or choose another --out"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}, {started}\n".encode())
        self._descriptor = descriptor
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._descriptor is not None:
            os.ftruncate(self._descriptor, 0)
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None
