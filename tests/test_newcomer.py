"""A newcomer's path, each command taken verbatim from the docs: the README's Python quick
start, then the own-data tutorial (docs/guide/own-data.md) on LabelMeFacade: its config,
train, evaluate, predict (command line and Python), export, and serve.

One deviation, on purpose: step 1 links the whole shared LabelMeFacade; here the folder holds
16 of its training images and 4 of its validation images (among them the two the tutorial
predicts), so that the tutorial's evaluations take seconds, not minutes.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import require_shared

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
TRAIN_IMAGES, VAL_IMAGES = 16, 4


def blocks(path: Path, language: str) -> list[str]:
    """The code blocks of ``language`` in ``path``, in order."""
    return [code for lang, code in BLOCK.findall(path.read_text()) if lang == language]


def small_labelmefacade(source: Path, target: Path) -> None:
    """``target`` in the folder layout of ``source``, with a few of its images."""
    splits = {
        split: (source / "splits" / f"{split}.txt").read_text().split()[:count]
        for split, count in (("train", TRAIN_IMAGES), ("val", VAL_IMAGES))
    }
    for folder in ("images", "masks", "splits"):
        (target / folder).mkdir(parents=True)
    shutil.copy(source / "classes.txt", target / "classes.txt")
    for split, stems in splits.items():
        (target / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for stem in stems:
            for folder in ("images", "masks"):
                (found,) = (source / folder).glob(f"{stem}.*")
                shutil.copy(found, target / folder / found.name)


def shell(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_readme_quick_start_and_the_own_data_tutorial_run_verbatim(tmp_path):
    labelmefacade = require_shared("data/labelmefacade")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    quick_start = blocks(ROOT / "README.md", "python")[0]  # the first: before any setup of yours
    result = subprocess.run(
        [sys.executable, "-c", quick_start], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]

    tutorial = ROOT / "docs" / "guide" / "own-data.md"
    layout, train, evaluate, predict, export, serve = blocks(tutorial, "bash")
    (config,) = blocks(tutorial, "yaml")
    (python,) = blocks(tutorial, "python")
    assert "ln -s" in layout and "data/labelmefacade" in layout
    small_labelmefacade(labelmefacade, tmp_path / "data" / "labelmefacade")
    (tmp_path / "lmf.yaml").write_text(config)  # "Save this as lmf.yaml"

    shell(train, tmp_path, env)
    assert (tmp_path / "runs/lmf/metrics.json").is_file()
    shell(evaluate, tmp_path, env)
    shell(predict, tmp_path, env)
    assert len(list((tmp_path / "predictions").glob("*_labels.png"))) == 2
    result = subprocess.run(
        [sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and "building" in result.stdout, result.stderr[-3000:]
    assert (tmp_path / "models/lmf/model.safetensors").is_file()
    shell(export, tmp_path, env)
    assert (tmp_path / "lmf.onnx").is_file()

    (command,) = serve.strip().splitlines()
    port = re.search(r"--port (\d+)", command).group(1)
    server = subprocess.Popen(
        command,
        shell=True,
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        page = None
        for _ in range(120):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                time.sleep(0.5)
        assert page is not None and b"<canvas" in page
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
