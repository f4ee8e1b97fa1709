"""How many threads training computes with: ``train.threads``.

``auto`` (the default) keeps torch's number (one per core) unless other work is busy on the
cores this process may use when the run starts: then those cores are left to it. PyTorch's
threads wait for each other at every operation, so one thread that shares its core with
another program holds all of them back: on this project's 2-core machine, 25 training steps
took 27.8 s alone, 101.4 s beside one busy core with 2 threads and 34.9 s with 1 thread. The
choice is announced in one line; an integer chooses outright. The run's ``config.yaml``
records the number used.

The busy cores are measured, not guessed from the load average (which counts this process
too: a grid's second run, started right after its first, saw its own predecessor as "other
work" and trained on one thread): over :data:`SAMPLE_SECONDS`, the CPU time the whole machine
spent busy (``/proc/stat``) minus this process's own (``/proc/self/stat``), in CPUs, shared
evenly over the machine's CPUs, rounded. Where ``/proc`` is absent the 1-minute load average
stands in.
"""

import math
import os
import time
from pathlib import Path

import torch

from clipfuse.errors import announce

AUTO = "auto"
SAMPLE_SECONDS = 0.5
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


def _machine_busy_and_total() -> tuple[int, int]:
    """Clock ticks the machine's CPUs spent busy and in all, since boot (``/proc/stat``)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def _own_ticks() -> int:
    """Clock ticks this process (all its threads) spent on a CPU (``/proc/self/stat``)."""
    after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])  # utime + stime


def other_work(seconds: float | None = None) -> tuple[float, str] | None:
    """CPUs kept busy by other processes, and how that was measured: over ``seconds`` (default
    :data:`SAMPLE_SECONDS`) from ``/proc`` (this process's own time left out), else the
    1-minute load average; None where neither exists."""
    seconds = SAMPLE_SECONDS if seconds is None else seconds
    try:
        busy_before, total_before = _machine_busy_and_total()
        own_before = _own_ticks()
        time.sleep(seconds)
        busy_after, total_after = _machine_busy_and_total()
        own = _own_ticks() - own_before
    except (OSError, ValueError, IndexError):
        load = load_average()
        return None if load is None else (load, f"load average {load:.2f} over 1 minute")
    cpus = os.cpu_count() or 1
    elapsed = (total_after - total_before) / cpus
    if elapsed <= 0:
        return 0.0, f"measured over {seconds:g} s"
    others = max(0.0, (busy_after - busy_before - own) / elapsed)
    return round(others, 2), f"{others:.2f} CPUs busy with other work over {seconds:g} s"


def busy_cores(load: float | None, cores: int, cpu_count: int) -> int:
    """How many of our ``cores`` other work keeps busy: its share of the machine's ``load``
    on our cores, rounded (0 without a load average)."""
    if load is None:
        return 0
    share = load * cores / max(cpu_count, cores)
    return min(cores, math.floor(share + 0.5))


def choose_threads(
    default: int, cores: int, cpu_count: int, load: float | None, how: str = ""
) -> tuple[int, str | None]:
    """``train.threads: auto``: ``default`` threads, or one per core that other work leaves
    free when that is fewer (at least one); and why, when it is fewer. ``load``: CPUs busy
    with other work on the whole machine, ``how``: how that was measured (for the reason)."""
    busy = busy_cores(load, cores, cpu_count)
    threads = max(1, min(default, cores - busy))
    if busy == 0 or threads >= default:
        return default, None
    verb = "is" if busy == 1 else "are"
    return threads, (
        f"{busy} of the {cores} cores this process may use {verb} busy with other work "
        f"({how or f'load {load:.2f}'} on {cpu_count} CPUs)"
    )


def use_threads(config: dict, say: bool = True) -> dict:
    """Set torch's threads from ``train.threads`` (``auto``: :func:`choose_threads` for this
    machine now, announced when ``say`` and fewer than torch's own); ``config`` with the
    number used (what the run's config.yaml records)."""
    threads = config["train"].get("threads", AUTO)
    if threads == AUTO:
        cores, cpu_count = usable_cores(), os.cpu_count() or 1
        load, how = other_work() or (None, "")
        threads, reason = choose_threads(TORCH_DEFAULT, cores, cpu_count, load, how)
        if reason and say:
            plural = "s" if threads > 1 else ""
            announce(
                f"training with {threads} thread{plural} instead of {TORCH_DEFAULT}: {reason}; "
                "set train.threads=N to choose"
            )
    torch.set_num_threads(threads)
    return {**config, "train": {**config["train"], "threads": threads}}
