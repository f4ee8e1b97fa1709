"""One training per run folder (engine/lock.py): a second training into a busy folder is
refused naming the first, and kill -9 leaves no stale lock."""

import signal
import subprocess
import sys
import time

from helpers import refused, snapshot


def test_second_training_into_a_busy_folder_is_refused_naming_the_first(world, tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "clipfuse.cli", "train", "--config", str(world.config)]
        + ["--out", str(out), "train.max_steps=100000", "train.val_every=100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "config.yaml").is_file():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first training did not start"
            time.sleep(0.2)
        before = snapshot(out / "config.yaml")
        err = refused(
            capsys,
            ["train", "--config", str(world.config), "--out", str(out)],
            "in use by another training",
            f"pid {first.pid}",
        )
        assert "--out" in err
        assert snapshot(out / "config.yaml") == before  # still the first run's config
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        first.stderr.close()
    from clipfuse.engine.lock import RunLock

    with RunLock(out):  # kill -9 leaves no stale lock: the kernel released it
        pass
