"""train.threads: auto leaves cores that other work keeps busy to it (clipfuse.threads)."""

import pytest
import torch
import yaml
from helpers import tiny_config

from clipfuse import threads as threads_module
from clipfuse.engine import train
from clipfuse.threads import busy_cores, choose_threads, use_threads


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("default", "cores", "cpu_count", "load", "expected"),
    [
        (2, 2, 2, 0.15, 2),  # alone (our own start-up shows as a little load)
        (2, 2, 2, 1.15, 1),  # one core busy with other work: measured 101.4 s -> 34.9 s
        (2, 2, 2, 4.4, 1),  # all busy: never fewer than one
        (8, 8, 8, 2.6, 5),  # three of eight busy
        (2, 2, 8, 4.0, 1),  # pinned to 2 of 8 CPUs: our share of the load is 1
        (2, 2, 2, None, 2),  # no load average on this OS: torch's number
        (1, 2, 2, 1.0, 1),  # OMP_NUM_THREADS=1 already: nothing to take away
        (4, 2, 2, 0.0, 4),  # more threads than cores asked via OMP_NUM_THREADS, machine idle
    ],
)
def test_auto_chooses_one_thread_per_core_other_work_leaves_free(
    default, cores, cpu_count, load, expected
):
    threads, reason = choose_threads(default, cores, cpu_count, load, "as measured")
    assert threads == expected
    assert (reason is None) == (threads == default)
    if reason:
        busy = busy_cores(load, cores, cpu_count)
        assert reason.startswith(f"{busy} of the {cores} cores this process may use")
        assert reason.endswith(f"(as measured on {cpu_count} CPUs)")


def _busy_machine(monkeypatch, load: float) -> None:
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(
        threads_module, "other_work", lambda: (load, f"{load:.2f} CPUs busy with other work")
    )
    monkeypatch.setattr(threads_module, "TORCH_DEFAULT", 2)


def test_auto_says_what_it_chose_why_and_how_to_override(monkeypatch, capsys):
    _busy_machine(monkeypatch, load=1.2)
    config = use_threads({"train": {"threads": "auto"}})
    assert config["train"]["threads"] == 1 and torch.get_num_threads() == 1
    assert capsys.readouterr().err.splitlines() == [
        "note: training with 1 thread instead of 2: 1 of the 2 cores this process may use is "
        "busy with other work (1.20 CPUs busy with other work on 2 CPUs); set train.threads=N "
        "to choose"
    ]
    _busy_machine(monkeypatch, load=0.1)
    assert use_threads({"train": {"threads": "auto"}})["train"]["threads"] == 2
    assert use_threads({"train": {"threads": 2}}, say=True)["train"]["threads"] == 2  # explicit
    assert torch.get_num_threads() == 2 and capsys.readouterr().err == ""


def test_the_run_records_the_threads_used_and_a_resume_may_change_them(
    folder_dataset, tmp_path, monkeypatch, capsys
):
    _busy_machine(monkeypatch, load=1.0)
    out = tmp_path / "run"
    train(tiny_config(folder_dataset, max_steps=1, val_every=1), out)
    assert "note: training with 1 thread instead of 2" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["threads"] == 1
    train(None, out, resume=True, overrides=["train.threads=2", "train.max_steps=2"])
    assert "train.threads 1 -> 2" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["threads"] == 2


def test_other_work_leaves_this_process_out_and_sees_a_busy_child():
    """The measurement subtracts this process's own CPU time (the load average counts it: a
    grid's second run saw its predecessor as other work) and counts another process's."""
    import subprocess
    import sys
    import threading

    stop = threading.Event()

    def spin() -> None:  # this process busy on one core: not other work
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        own_load, how = threads_module.other_work(0.5)
    finally:
        stop.set()
        spinner.join()
    assert how == f"{own_load:.2f} CPUs busy with other work over 0.5 s"
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        threads_module.other_work(0.2)  # let the child start
        child_load, _ = threads_module.other_work(0.5)
    finally:
        child.kill()
        child.wait()
    assert child_load - own_load > 0.5, (own_load, child_load)
