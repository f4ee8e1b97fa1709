"""Helpers shared by the tests: ../shared lookup, tiny datasets, tiny configs, file snapshots,
damaged checkpoints and the repository's scripts as modules."""

import errno
import hashlib
import importlib.util
import io
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from clipfuse.paths import shared_root

ROOT = Path(__file__).resolve().parents[1]

# A tiny, randomly initialised CLIP (open_clip config); nothing is downloaded.
TINY_ARCH = "clipfuse-tiny-test"
TINY_EMBED_DIM = 16
TINY_WIDTH = 32
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": TINY_EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": TINY_WIDTH,
        "heads": 2,
        "layers": 2,
    },
}


def load_script(relative: str) -> ModuleType:
    """The script at ``relative`` (to the repository root, e.g. ``tools/gpu_check.py``), imported
    as a module (scripts are not in the package), its folder on ``sys.path`` as when it is run
    (so it can import the scripts beside it)."""
    path = ROOT / relative
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_shared(relative: str) -> Path:
    """Path inside ../shared; skip outside CI when absent, fail in CI (CI=true) where it must exist."""
    path = shared_root() / relative
    if not path.exists():
        message = f"{path} is absent (set CLIPFUSE_SHARED to the shared folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_folder_dataset(
    root: Path, classes=("sky", "road", "car"), size=(40, 48), per_split=4
) -> Path:
    """A tiny dataset in the custom folder layout: images/<split>, masks/<split>, classes.txt.

    Each image is a few flat colour bands with matching labels, so a model can learn it.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    colours = rng.integers(0, 256, size=(len(classes), 3))
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(per_split):
            mask = np.zeros(size, dtype=np.uint8)
            cuts = sorted(rng.choice(np.arange(4, size[0] - 4), len(classes) - 1, replace=False))
            for k, cut in enumerate(cuts, start=1):
                mask[cut:] = k
            mask[0, :3] = 255
            image = colours[mask.clip(0, len(classes) - 1)] + rng.integers(-10, 10, size=(*size, 3))
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / "images" / split / f"{i:03d}.png"
            )
            Image.fromarray(mask).save(root / "masks" / split / f"{i:03d}.png")
    return root


def tiny_config(data_root: Path, method: str = "plain", **train) -> dict:
    """A config that trains in seconds on :func:`write_folder_dataset`."""
    from clipfuse.config import load_config

    overrides = [
        f"model.method={method}",
        "model.decoder_kwargs={channels: 16}",
        "data.dataset=folder",
        f"data.root={data_root}",
        "data.crop_size=[32, 32]",
        "data.scale_range=[1.0, 1.0]",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "data.num_workers=0",
        "train.max_steps=4",
        "train.val_every=4",
        "train.checkpoint_every=2",
        "train.optimizer=adamw",
        "train.lr=0.001",
        "train.progress_bar=false",
        "train.accelerator=cpu",
        "text.encoder=random:32",
    ]
    if method == "convformer":
        overrides.append("model.head_kwargs={dim: 32, num_blocks: 1, heads: 2}")
    if method == "denseclip":
        overrides.append("model.head_kwargs={context_width: 16}")
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config(None, overrides)


def write_tiny_configs(data_root: Path, folder: Path) -> list[Path]:
    """``tiny-plain.yaml`` and ``tiny-convformer.yaml`` (:func:`tiny_config` on ``data_root``) in
    ``folder``: the configs bench tests compare."""
    import yaml

    paths = []
    for method in ("plain", "convformer"):
        path = folder / f"tiny-{method}.yaml"
        path.write_text(yaml.safe_dump(tiny_config(data_root, method)))
        paths.append(path)
    return paths


def error_line(stderr: str) -> str:
    """The one ``error:`` line of a refused command's stderr; ``note:`` lines (announced
    choices, printed before the failure) may precede it, nothing else and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def last_error_line(stderr: str) -> str:
    """The one ``error:`` line, which ends ``stderr`` (a training's info lines may come
    before it); no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    return errors[0]


def refused(capsys, argv: list[str], *fragments: str, read=error_line) -> str:
    """``clipfuse argv`` exits 2 with one ``error:`` line on stderr holding ``fragments``
    (the line found by ``read``: :func:`error_line`, or :func:`last_error_line` where a
    training's info lines may come first)."""
    from clipfuse.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = read(capsys.readouterr().err)
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` -> SHA-256 of its bytes."""
    files = {}
    for folder in folders:
        paths = (
            [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        )
        for path in paths:
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


class FullDisk(io.RawIOBase):
    """``file`` on a disk with ``room`` bytes left: a write past them fails with ENOSPC, as a
    real full disk does (``torch.save`` into it then raises its ``RuntimeError: ... unexpected
    pos ...`` while handling that ``OSError``)."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_bad_checkpoint(kind: str, good: Path, path: Path) -> str:
    """Write a damaged checkpoint of ``kind`` to ``path``; the expected error fragment."""
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
        return "is empty (0 bytes)"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
        return "truncated or damaged"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return "is not a PyTorch checkpoint"
    if kind == "malicious":
        torch.save({"payload": _Exploit(path.parent / "pwned")}, path)
        return "plain data: refused (loading it could run code"
    checkpoint = torch.load(good, weights_only=True)
    if kind == "version99":
        checkpoint["clipfuse"]["format_version"] = 99
        torch.save(checkpoint, path)
        return "format version 99"
    if kind == "misfit":
        config = checkpoint["clipfuse"]["config"]
        config["model"]["decoder_kwargs"] = {"channels": 24}
        torch.save(checkpoint, path)
        return "does not fit its config"
    assert kind == "foreign"
    torch.save({"state_dict": checkpoint["state_dict"]}, path)
    return "was not written by clipfuse"
