"""The wheel installs as a library: built here, installed offline into a fresh virtual
environment that sees only the core dependencies (the already-installed torch, timm, ... of
this environment, exposed through a ``.pth`` file, not copied), it builds, trains a few steps
of the user's own loop, pushes the model to a stand-in Hugging Face hub on 127.0.0.1
(``tests/standin_hub.py``), reads it back with huggingface_hub's own client and with
``clipfuse.load("<hub id>")``, and predicts; a command that needs an extra names it in one line;
the shipped configs are package data."""

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from standin_hub import hub_environment, serve

ROOT = Path(__file__).resolve().parents[1]
# modules of the extras (train, clip, serve, export, bench) that the fresh venv must not see
EXTRA_MODULES = ("lightning", "open_clip", "transformers", "albumentations", "fastapi", "onnx")


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the source (the build writes nothing into the checkout)."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*command, "--no-index", "-q", "-w", str(wheels), str(source)],
        check=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("clipfuse-*.whl")
    return wheel


def core_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` without any extra (markers for this platform applied)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    requirements = [
        Requirement(line.split(":", 1)[1].strip())
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def core_distributions(requirements: list[Requirement]) -> list[metadata.Distribution]:
    """The installed distributions that satisfy ``requirements``, with their own
    requirements (and those of the extras asked of them), recursively: the closure a fresh
    install of the core needs."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        key = canonicalize_name(requirement.name)
        found.setdefault(key, metadata.distribution(requirement.name))
        for extra in ("", *sorted(requirement.extras)):
            if (key, extra) in done:
                continue
            done.add((key, extra))
            for child in map(Requirement, found[key].requires or []):
                if child.marker is None or child.marker.evaluate({"extra": extra}):
                    pending.append(child)
    return list(found.values())


def expose(distributions: list[metadata.Distribution], folder: Path) -> None:
    """Links in ``folder`` to each distribution's top-level files and its ``.dist-info``, so
    that an interpreter with ``folder`` on its path imports them and pip sees them installed."""
    folder.mkdir()
    for dist in distributions:
        site = Path(dist.locate_file(""))
        tops = {Path(str(file)).parts[0] for file in dist.files or []}
        for top in sorted(t for t in tops if t not in ("..", "__pycache__")):
            link = folder / top
            if not link.exists() and (site / top).exists():
                link.symlink_to(site / top)


FRESH_SCRIPT = """
import importlib, sys
from pathlib import Path

import numpy as np
import torch

for module in {extras!r}:
    try:
        importlib.import_module(module)
    except ImportError:
        continue
    raise SystemExit(f"{{module}} is importable in the fresh venv")

import clipfuse
from clipfuse.losses import segmentation_loss

assert Path(clipfuse.__file__).is_relative_to(sys.prefix), clipfuse.__file__
torch.manual_seed(0)
names = ["sky", "road", "car"]
model = clipfuse.create_model("plain_mobilenetv2", names)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
images = torch.rand(2, 3, 64, 64) * 255
masks = torch.randint(0, 3, (2, 64, 64))
for _ in range(20):  # the user's own training loop
    loss = segmentation_loss(model(images), masks)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.save_pretrained("{folder}", push_to_hub=True, repo_id="me/fresh", metrics={{"mIoU": 1.5}})
# huggingface_hub's own client reads what was pushed
from huggingface_hub import ModelCard, hf_hub_download
pushed = {{n: hf_hub_download("me/fresh", n, cache_dir="{folder}-client") for n in
          ("config.json", "model.safetensors", "README.md")}}
assert ModelCard.load(pushed["README.md"]).data.library_name == "clipfuse"
assert Path(pushed["model.safetensors"]).read_bytes() == Path("{folder}/model.safetensors").read_bytes()
image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
for source in ("{folder}", "me/fresh"):
    loaded = clipfuse.load(source, device="cpu")
    assert loaded.class_names == names, loaded.class_names
    saved, read = model.state_dict(), loaded.segmentor.state_dict()
    assert saved.keys() == read.keys() and all(torch.equal(saved[k], read[k].cpu()) for k in saved)
    labels = loaded.predict(image).label_map
    assert labels.shape == (48, 64) and labels.max() < len(names), (labels.shape, labels.max())
print("ok")
"""


@pytest.mark.slow
def test_the_wheel_installs_and_works_with_the_core_dependencies_only(tmp_path):
    wheel = build_wheel(tmp_path)
    shipped = {path.relative_to(ROOT).as_posix() for path in (ROOT / "configs").rglob("*.yaml")}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"clipfuse/{name}" for name in shipped} <= names
    assert f"clipfuse-{wheel.name.split('-')[1]}.dist-info/licenses/LICENSE" in names
    core = tmp_path / "core"
    expose(core_distributions(core_requirements(wheel)), core)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "core.pth").write_text(f"{core}\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    hub_keys = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_DISABLE_XET", "HF_TOKEN")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    # with dependency resolution: the wheel's core requirements are met by exactly that set
    subprocess.run(
        [*install, "--no-index", "--find-links", str(wheel.parent), "clipfuse"],
        check=True,
        timeout=120,
        env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
    )
    script = FRESH_SCRIPT.format(extras=EXTRA_MODULES, folder=tmp_path / "model")

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
        )

    with serve({}) as endpoint:
        hub = hub_environment(endpoint, tmp_path / "hf")
        env.update({key: hub[key] for key in hub_keys}, NO_PROXY="127.0.0.1")
        result = run(str(python), "-c", script)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]

    clipfuse = str(venv / "bin" / "clipfuse")
    result = run(clipfuse, "train", "--config", "plain_mobilenetv2_camvid_192x256_140")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and "pip install 'clipfuse[train]'" in result.stderr

    result = run(clipfuse, "configs")
    assert result.returncode == 0, result.stderr[-3000:]
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == sorted(path.stem for path in (ROOT / "configs").glob("*.yaml"))
