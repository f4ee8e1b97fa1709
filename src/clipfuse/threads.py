"""How many threads training computes with: ``train.threads``.

``auto`` (the default) keeps torch's number (one per core) unless other work is busy on the
cores this process may use when the run starts: then those cores are left to it. PyTorch's
threads wait for each other at every operation, so one thread that shares its core with
another program holds all of them back: on this project's 2-core machine, 25 training steps
took 27.8 s alone, 101.4 s beside one busy core with 2 threads and 34.9 s with 1 thread. The
choice is announced in one line; an integer chooses outright. The run's ``config.yaml``
records the number used.

The busy cores are estimated from the 1-minute load average (runnable processes on the whole
machine; psutil is not needed), shared evenly over the machine's CPUs, rounded.
"""

import math
import os

import torch

from clipfuse.errors import announce

AUTO = "auto"
# torch's own choice (OMP_NUM_THREADS, else one per physical core), read before clipfuse sets any.
TORCH_DEFAULT = torch.get_num_threads()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def busy_cores(load: float | None, cores: int, cpu_count: int) -> int:
    """How many of our ``cores`` other work keeps busy: its share of the machine's ``load``
    on our cores, rounded (0 without a load average)."""
    if load is None:
        return 0
    share = load * cores / max(cpu_count, cores)
    return min(cores, math.floor(share + 0.5))


def choose_threads(
    default: int, cores: int, cpu_count: int, load: float | None
) -> tuple[int, str | None]:
    """``train.threads: auto``: ``default`` threads, or one per core that other work leaves
    free when that is fewer (at least one); and why, when it is fewer."""
    busy = busy_cores(load, cores, cpu_count)
    threads = max(1, min(default, cores - busy))
    if busy == 0 or threads >= default:
        return default, None
    verb = "is" if busy == 1 else "are"
    return threads, (
        f"{busy} of the {cores} cores this process may use {verb} busy with other work "
        f"(load average {load:.2f} over 1 minute on {cpu_count} CPUs)"
    )


def use_threads(config: dict, say: bool = True) -> dict:
    """Set torch's threads from ``train.threads`` (``auto``: :func:`choose_threads` for this
    machine now, announced when ``say`` and fewer than torch's own); ``config`` with the
    number used (what the run's config.yaml records)."""
    threads = config["train"].get("threads", AUTO)
    if threads == AUTO:
        cores, cpu_count = usable_cores(), os.cpu_count() or 1
        threads, reason = choose_threads(TORCH_DEFAULT, cores, cpu_count, load_average())
        if reason and say:
            plural = "s" if threads > 1 else ""
            announce(
                f"training with {threads} thread{plural} instead of {TORCH_DEFAULT}: {reason}; "
                "set train.threads=N to choose"
            )
    torch.set_num_threads(threads)
    return {**config, "train": {**config["train"], "threads": threads}}
