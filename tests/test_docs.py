"""The documentation site (mkdocs.yml): it builds with --strict (no broken link or anchor, no
docstring mkdocstrings cannot read), its generated references cover every config key and
command, every command the user guide tells a user to type parses, and the generated
frontier table matches its result files."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

from clipfuse.cli import build_parser
from clipfuse.config_schema import default_config

ROOT = Path(__file__).resolve().parents[1]
GUIDE_PAGES = sorted([ROOT / "docs" / "index.md", *(ROOT / "docs" / "guide").glob("*.md")])
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with --strict (warnings are errors) into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    problems = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "\n".join(problems) or done.stderr[-3000:]
    return out


def _commands(prefix: str) -> list[tuple[str, str]]:
    """(page, line) of every line of the guide's bash blocks that starts with ``prefix``."""
    found = []
    for page in GUIDE_PAGES:
        for block in BASH_BLOCK.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip().startswith(prefix):
                    found.append((page.name, line.strip()))
    return found


def test_the_site_builds_strictly_with_its_generated_references(site):
    configuration = (site / "guide" / "configuration" / "index.html").read_text()
    defaults = default_config()
    keys = [
        f"{section}.{key}" if isinstance(values, dict) else section
        for section, values in defaults.items()
        for key in (values if isinstance(values, dict) else [None])
    ]
    missing = [key for key in keys if f"<code>{key}</code>" not in configuration]
    assert not missing, f"configuration reference lacks {missing}"
    assert "<code>train.max_steps</code>" in configuration and len(keys) > 50

    cli = (site / "guide" / "cli" / "index.html").read_text()
    parser = build_parser()
    names = next(a for a in parser._actions if a.dest == "command").choices
    absent = [name for name in names if f"clipfuse {name}</code>" not in cli]
    assert not absent, f"command-line reference lacks {absent}"

    api = (site / "guide" / "api" / "index.html").read_text()
    documented = set(re.findall(r'id="(clipfuse[\w.]*)"', api))
    assert {
        "clipfuse.load",
        "clipfuse.models.api.create_model",
        "clipfuse.models.registry.list_models",
        "clipfuse.inference.pretrained.ClipfuseModel.predict",
        "clipfuse.inference.pretrained.ClipfuseModel.save_pretrained",
        "clipfuse.models.segmentor.Segmentor",
        "clipfuse.losses.segmentation_loss",
        "clipfuse.data.folder.FolderDataset",
    } <= documented


def test_every_clipfuse_command_of_the_guide_parses():
    commands = _commands("clipfuse ")
    assert len(commands) >= 15  # the guide's examples, not an empty scan
    parser = build_parser()
    for page, line in commands:
        words = shlex.split(line, comments=True)
        try:
            parser.parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"{page}: `{line}` does not parse (see the usage above)")


def test_every_make_command_of_the_guide_names_a_makefile_target():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    commands = _commands("make ")
    assert commands
    for page, line in commands:
        words = [word for word in shlex.split(line, comments=True)[1:] if "=" not in word]
        unknown = [word for word in words if word not in targets]
        assert not unknown, f"{page}: `{line}` names no Makefile target {unknown}"


def test_the_frontier_table_is_the_generated_one():
    frontier = load_script("docs/scripts/frontier.py")
    record = frontier.frontier()
    committed = frontier.OUT.with_suffix(".md").read_text().splitlines()
    assert committed == frontier.table(record), (
        "the frontier table is not what docs/scripts/frontier.py generates from the result files: "
        "run `.venv/bin/python docs/scripts/frontier.py --write`"
    )
    baseline = record["points"][0]
    assert baseline["label"] == frontier.BASELINE and baseline["vs_baseline"] is None
    for point in record["points"][1:]:
        assert list(point["vs_baseline"]["seeds"]) == point["seeds"]  # paired on every seed it has
        benched = [speed for speed in point["speed"] if speed is not None]  # None: not benched
        assert len(point["speed"]) == len(frontier.BENCHES) and benched
        for speed in benched:
            assert speed["fps"] == max(1000 / ms for ms in speed["ms"].values())
