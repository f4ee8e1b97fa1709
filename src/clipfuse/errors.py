"""User-facing messages: the one exception type the command line turns into a one-line
message, and the one-line notes on stderr."""

import sys


class ClipfuseError(Exception):
    """A user-facing error: bad input, a missing file, an unknown name.

    The CLI prints ``error: <message>`` and exits with status :attr:`exit_code` (2), without a
    traceback. The message names the offending file or value and what was expected.
    """

    exit_code = 2


def one_line(error: BaseException) -> str:
    """The error's message on one line, for a one-line error of our own.

    A :class:`ClipfuseError`'s lines are joined, also when a DataLoader worker re-raised it
    (PyTorch then prepends the worker's traceback to the message); another library's
    exception gives its first line (what follows is advice or a traceback); an exception
    without a message gives its type's name.
    """
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "Original Traceback" in text:
        return lines[-1].split("ClipfuseError: ", 1)[-1]
    if not isinstance(error, ClipfuseError):
        return lines[0]
    return " ".join(lines)


def announce(message: str) -> None:
    """One line on stderr for a choice the user did not make explicitly (a fallback, a
    default filled in, an old name read as a new one)."""
    print(f"note: {message}", file=sys.stderr, flush=True)
