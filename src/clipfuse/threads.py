"""How many threads training computes with: ``train.threads``.

``auto`` (the default) uses one thread per core this process may use (its CPU affinity, and a
cgroup CPU quota where a container sets one; fewer if ``OMP_NUM_THREADS`` says so), except the
cores other work keeps busy: those are left to it. PyTorch's threads wait for each other at
every operation, so one thread that shares its core with another program holds all of them
back (docs/research/speed.md, "Threads").

Other work is measured, not guessed from the load average (which counts this process too): the
busy CPU time of this process's cores (``/proc/stat``, one line per CPU) minus the time of this
process and of its own children (DataLoader workers are the run's own work, not other work),
in CPUs, rounded. Training samples it for :data:`SAMPLE_SECONDS` before it starts, then again
every :data:`RECHECK_SECONDS` while it runs, over the time since the last check
(:class:`CoreWatch`), so a short job that was busy at the start does not keep a long run on
fewer threads, and one that starts later is still left its core. Each change is announced in
one line; an integer ``train.threads`` chooses outright. Where ``/proc`` is absent the 1-minute
load average stands in, once, at the start.
"""

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from clipfuse.errors import announce

AUTO = "auto"
SAMPLE_SECONDS = 0.5
RECHECK_SECONDS = 5.0
# torch's own choice (OMP_NUM_THREADS, else one per physical core), read before clipfuse sets any.
TORCH_DEFAULT = torch.get_num_threads()


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup quota allows this process (``cpu.max`` of cgroup v2, or v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None where no quota is set."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def affinity() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """The cores this process may keep busy: its CPU affinity, capped by a cgroup quota
    (rounded, at least one)."""
    cores = len(affinity())
    limit = cgroup_cpu_limit()
    return cores if limit is None else max(1, min(cores, math.floor(limit + 0.5)))


def default_threads() -> int:
    """torch's number, at most one per usable core unless ``OMP_NUM_THREADS`` set it."""
    if os.environ.get("OMP_NUM_THREADS"):
        return TORCH_DEFAULT
    return max(1, min(TORCH_DEFAULT, usable_cores()))


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class CpuSample:
    """Clock ticks at one instant: busy and in all on this process's CPUs, and this process's
    own (with its children's)."""

    busy: int
    total: int
    own: int
    cpus: int

    @classmethod
    def now(cls) -> "CpuSample":
        """Read ``/proc`` (raises OSError / ValueError where it is absent or unreadable)."""
        mine = {f"cpu{index}" for index in affinity()}
        busy = total = 0
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] in mine:
                ticks = [int(value) for value in fields[1:9]]  # guest time is in user time
                idle = ticks[3] + ticks[4]  # idle + iowait
                busy += sum(ticks) - idle
                total += sum(ticks)
        if not total:
            raise ValueError("no per-CPU lines in /proc/stat")
        return cls(busy, total, _tree_ticks(os.getpid()), len(mine))

    def other_cpus(self, earlier: "CpuSample") -> float:
        """CPUs kept busy by other work between ``earlier`` and this sample."""
        elapsed = (self.total - earlier.total) / self.cpus
        if elapsed <= 0:
            return 0.0
        others = (self.busy - earlier.busy) - (self.own - earlier.own)
        return max(0.0, others / elapsed)


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is the first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _tree_ticks(pid: int) -> int:
    """CPU ticks of ``pid`` and its descendants, live or ended (utime + stime + the waited-for
    children's cutime + cstime)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry.name)
        except (OSError, IndexError):  # ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        ticks[int(entry.name)] = sum(int(value) for value in fields[11:15])
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += ticks.get(current, 0)
        stack.extend(children.get(current, []))
    return total


def other_work(seconds: float | None = None) -> tuple[float, str] | None:
    """CPUs of this process's cores kept busy by other work, and how that was measured: over
    ``seconds`` (default :data:`SAMPLE_SECONDS`) from ``/proc``, else the 1-minute load
    average shared over the machine's CPUs; None where neither exists."""
    seconds = SAMPLE_SECONDS if seconds is None else seconds
    try:
        before = CpuSample.now()
        time.sleep(seconds)
        others = CpuSample.now().other_cpus(before)
    except (OSError, ValueError, IndexError):
        load = load_average()
        if load is None:
            return None
        share = load * len(affinity()) / max(os.cpu_count() or 1, 1)
        return share, f"load average {load:.2f} over 1 minute on {os.cpu_count()} CPUs"
    return round(others, 2), f"{others:.2f} CPUs busy with other work over {seconds:g} s"


def choose_threads(default: int, cores: int, others: float | None) -> int:
    """One thread per core that ``others`` (CPUs busy with other work on our ``cores``,
    rounded) leaves free, at most ``default``, at least one."""
    busy = 0 if others is None else min(cores, math.floor(others + 0.5))
    return max(1, min(default, cores - busy))


def _reason(threads: int, cores: int, how: str) -> str:
    busy = cores - threads
    verb = "is" if busy == 1 else "are"
    return f"{busy} of the {cores} cores this process may use {verb} busy with other work ({how})"


def _threads_word(count: int) -> str:
    return f"{count} thread{'s' if count != 1 else ''}"


def use_threads(threads: int | str, say: bool = True) -> int:
    """Set torch's threads from ``train.threads`` (``auto``: :func:`choose_threads` for this
    machine now, announced when ``say`` and fewer than :func:`default_threads`); the number."""
    if threads == AUTO:
        default, cores = default_threads(), usable_cores()
        others, how = other_work() or (None, "")
        threads = choose_threads(default, cores, others)
        if threads < default and say:
            announce(
                f"training with {_threads_word(threads)} instead of {default}: "
                f"{_reason(threads, cores, how)}; set train.threads=N to choose"
            )
    torch.set_num_threads(threads)
    return threads


class CoreWatch:
    """Re-chooses ``train.threads: auto`` while a run trains: :meth:`check` (called after every
    step) measures other work over the time since the last check, every
    :data:`RECHECK_SECONDS` at most, and sets torch's threads when the choice changes
    (announced in one line when ``say``). Without ``/proc`` it never changes them."""

    def __init__(self, say: bool = True, interval: float | None = None) -> None:
        self.say = say
        self.interval = RECHECK_SECONDS if interval is None else interval
        self.default, self.cores = default_threads(), usable_cores()
        self.last = self._sample()
        self.last_time = time.monotonic()

    @staticmethod
    def _sample() -> CpuSample | None:
        try:
            return CpuSample.now()
        except (OSError, ValueError, IndexError):
            return None

    def check(self) -> int:
        """torch's thread count after this check."""
        current = torch.get_num_threads()
        if self.last is None or time.monotonic() - self.last_time < self.interval:
            return current
        sample = self._sample()
        if sample is None:
            return current
        seconds = time.monotonic() - self.last_time
        others = sample.other_cpus(self.last)
        self.last, self.last_time = sample, time.monotonic()
        threads = choose_threads(self.default, self.cores, others)
        if threads != current:
            torch.set_num_threads(threads)
            if self.say:
                how = f"{others:.2f} CPUs busy with other work over the last {seconds:.0f} s"
                why = _reason(threads, self.cores, how) if threads < self.default else how
                announce(f"training now with {_threads_word(threads)}: {why}")
        return threads
