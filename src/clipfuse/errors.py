"""The one exception type the command line turns into a one-line message."""


class ClipfuseError(Exception):
    """A user-facing error: bad input, a missing file, an unknown name.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    The message names the offending file or value and what was expected.
    """


def one_line(error: ClipfuseError) -> str:
    """The error's message on one line, also when a DataLoader worker re-raised it (PyTorch
    then prepends the worker's traceback to the message)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "Original Traceback" in str(error):
        return lines[-1].split("ClipfuseError: ", 1)[-1]
    return " ".join(line.strip() for line in lines)
