"""train.threads: auto leaves cores that other work keeps busy to it, and follows that work as
it comes and goes during the run (clipfuse.threads)."""

import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml
from helpers import tiny_config

from clipfuse import threads as threads_module
from clipfuse.engine import train
from clipfuse.threads import CoreWatch, CpuSample, cgroup_cpu_limit, choose_threads, use_threads


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("default", "cores", "others", "expected"),
    [
        (2, 2, 0.15, 2),  # alone (our own start-up shows as a little)
        (2, 2, 1.15, 1),  # one core busy with other work: measured 101.4 s -> 34.9 s
        (2, 2, 0.67, 1),  # 2 threads beside one busy process share 2 cores 3 ways
        (2, 2, 4.4, 1),  # all busy: never fewer than one
        (8, 8, 2.6, 5),  # three of eight busy
        (2, 2, None, 2),  # not measurable on this OS: torch's number
        (1, 2, 1.0, 1),  # OMP_NUM_THREADS=1 already: nothing to take away
    ],
)
def test_auto_chooses_one_thread_per_core_other_work_leaves_free(default, cores, others, expected):
    assert choose_threads(default, cores, others) == expected


def _busy_machine(monkeypatch, others: float) -> None:
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(
        threads_module, "other_work", lambda: (others, f"{others:.2f} CPUs busy with other work")
    )
    monkeypatch.setattr(threads_module, "TORCH_DEFAULT", 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_auto_says_what_it_chose_why_and_how_to_override(monkeypatch, capsys):
    _busy_machine(monkeypatch, others=1.2)
    assert use_threads("auto") == 1 and torch.get_num_threads() == 1
    assert capsys.readouterr().err.splitlines() == [
        "note: training with 1 thread instead of 2: 1 of the 2 cores this process may use is "
        "busy with other work (1.20 CPUs busy with other work); set train.threads=N to choose"
    ]
    _busy_machine(monkeypatch, others=0.1)
    assert use_threads("auto") == 2
    assert use_threads(2, say=True) == 2  # explicit
    assert torch.get_num_threads() == 2 and capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, a container given 1.5 CPUs
        ({"cpu.max": "max 100000\n"}, None),  # v2, no quota
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files
    ],
)
def test_a_cgroup_cpu_quota_is_read(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == expected


def test_a_quota_caps_the_usable_cores_and_the_default(monkeypatch):
    monkeypatch.setattr(threads_module, "affinity", lambda: set(range(16)))
    monkeypatch.setattr(threads_module, "cgroup_cpu_limit", lambda: 2.0)
    monkeypatch.setattr(threads_module, "TORCH_DEFAULT", 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_module.usable_cores() == 2 and threads_module.default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # the user's own number stands
    assert threads_module.default_threads() == 16
    monkeypatch.setattr(threads_module, "cgroup_cpu_limit", lambda: 0.25)
    assert threads_module.usable_cores() == 1


class ScriptedMachine:
    """``CpuSample.now`` returning, per call, the ticks of 2 CPUs over 1 s (100 ticks each)
    with ``others`` CPUs of other work, in turn."""

    def __init__(self, others: list[float]) -> None:
        self.others = others
        self.calls = 0
        self.busy = self.total = 0

    def __call__(self) -> CpuSample:
        if self.calls:
            self.busy += int(100 * self.others[self.calls - 1])
            self.total += 200
        self.calls += 1
        return CpuSample(busy=self.busy, total=self.total, own=0, cpus=2)


def test_a_short_busy_start_does_not_keep_the_run_on_fewer_threads(monkeypatch, capsys):
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "TORCH_DEFAULT", 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    machine = ScriptedMachine([1.0, 0.05, 0.9, 0.0])
    monkeypatch.setattr(CpuSample, "now", machine)
    torch.set_num_threads(1)  # what a busy start chose
    watch = CoreWatch(say=True, interval=0)
    assert [watch.check() for _ in range(4)] == [1, 2, 1, 2]
    assert capsys.readouterr().err.splitlines() == [
        "note: training now with 2 threads: 0.05 CPUs busy with other work over the last 0 s",
        "note: training now with 1 thread: 1 of the 2 cores this process may use is busy with "
        "other work (0.90 CPUs busy with other work over the last 0 s)",
        "note: training now with 2 threads: 0.00 CPUs busy with other work over the last 0 s",
    ]


def test_checks_wait_for_their_interval(monkeypatch):
    machine = ScriptedMachine([1.0, 1.0])
    monkeypatch.setattr(CpuSample, "now", machine)
    watch = CoreWatch(say=False, interval=3600)
    watch.check()
    assert machine.calls == 1  # only the first sample: no check before the interval


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


def test_other_work_leaves_out_this_process_and_its_children_and_sees_others():
    """This process busy on one core, and its own child (as a DataLoader worker is), are not
    other work; a process that is not ours is."""
    stop = threading.Event()
    spinner = threading.Thread(target=_spin, args=(stop,))
    spinner.start()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        threads_module.other_work(0.2)  # let the child start
        own_load, how = threads_module.other_work(0.5)
    finally:
        stop.set()
        spinner.join()
        child.kill()
        child.wait()
    assert how == f"{own_load:.2f} CPUs busy with other work over 0.5 s"
    # not our descendant: its parent (sh) ends at once and it is adopted by init
    script = f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    stranger = int(subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout)
    try:
        threads_module.other_work(0.2)
        stranger_load, _ = threads_module.other_work(0.5)
    finally:
        subprocess.run(["kill", str(stranger)], check=False)
    assert stranger_load - own_load > 0.5, (own_load, stranger_load)


def test_the_run_records_auto_logs_the_threads_and_a_resume_may_change_them(
    folder_dataset, tmp_path, monkeypatch, capsys
):
    _busy_machine(monkeypatch, others=1.0)
    monkeypatch.setattr(threads_module, "RECHECK_SECONDS", 3600.0)  # no re-check in 2 steps
    out = tmp_path / "run"
    train(tiny_config(folder_dataset, max_steps=2, val_every=2, log_every=1), out)
    assert "note: training with 1 thread instead of 2" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["threads"] == "auto"
    logged = (out / "logs" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    column = logged[0].split(",").index("threads")
    assert {line.split(",")[column] for line in logged[1:]} - {""} == {"1.0"}
    train(None, out, resume=True, overrides=["train.threads=2", "train.max_steps=3"])
    assert "train.threads 'auto' -> 2" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["threads"] == 2
    assert torch.get_num_threads() == 2


def test_the_cpu_sample_reads_this_machine():
    first = CpuSample.now()
    time.sleep(0.05)
    second = CpuSample.now()
    assert second.total > first.total and second.own >= first.own
    assert first.cpus == len(threads_module.affinity())
