"""The README is the front door: at most 150 lines, its model table exactly what
``docs/scripts/model_table.py`` generates from the committed result files, every relative link
resolving, and no issue numbers, dates or CPU models (those belong to the research record)."""

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import load_script

from clipfuse.errors import ClipfuseError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GENERATOR = load_script("docs/scripts/model_table.py")
MAX_LINES = 150
MONTHS = (
    "Jan(uary)?|Feb(ruary)?|Mar(ch)?|Apr(il)?|May|June?|July?|Aug(ust)?|Sep(tember)?"
    "|Oct(ober)?|Nov(ember)?|Dec(ember)?"
)
FORBIDDEN = {
    "an issue number": re.compile(r"\bissues?\b[ #-]*\d+|(?<![\w&])#\d+\b", re.IGNORECASE),
    "a date": re.compile(rf"\b(19|20)\d\d-\d\d-\d\d\b|\b({MONTHS})\.? (\d{{1,2}}, )?(19|20)\d\d\b"),
    "a CPU model": re.compile(
        r"\b(Xeon|EPYC|Opteron|Ryzen|Threadripper|Core i[3579]|AMX|Apple M\d|Graviton|Neoverse)\b"
    ),
}


def test_model_table_is_the_generated_one():
    assert GENERATOR.readme_table(README.read_text()) == GENERATOR.model_table(), (
        "README.md's model table is not what docs/scripts/model_table.py generates: "
        "run `.venv/bin/python docs/scripts/model_table.py --write`"
    )


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines, at most {MAX_LINES}"


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_readme_names_no_issue_date_or_cpu(what):
    found = [
        f"line {number}: {match.group(0)!r}"
        for number, line in enumerate(README.read_text().splitlines(), 1)
        for match in [FORBIDDEN[what].search(line)]
        if match
    ]
    assert not found, f"README.md names {what}: " + "; ".join(found)


@pytest.mark.parametrize(
    ("what", "text"),
    [
        ("an issue number", "the sections of issue 21 in docs"),
        ("an issue number", "see #46"),
        ("a date", "a fresh clone (2026-12-05, idle)"),
        ("a date", "measured in December 2026"),
        ("a CPU model", "an Intel Xeon with AMX"),
        ("a CPU model", "on an AMD EPYC"),
    ],
)
def test_forbidden_patterns_catch_what_they_name(what, text):
    assert FORBIDDEN[what].search(text)


def test_readme_links_resolve():
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", README.read_text())
    local = [target for target in targets if "://" not in target]
    assert local, "README.md links to no page of the repository"
    missing = [target for target in local if not (ROOT / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_generator_refuses_a_run_of_other_steps(tmp_path, monkeypatch):
    row = GENERATOR.ROWS[0]
    source = GENERATOR.RESULTS / row.experiment / "results.json"
    results = json.loads(source.read_text())
    for seed in results["rows"]:
        if seed["run"] == row.run:
            seed["step"] += 1
    (tmp_path / row.experiment).mkdir()
    (tmp_path / row.experiment / "results.json").write_text(json.dumps(results))
    shutil.copy(GENERATOR.BENCH, tmp_path / "bench.json")
    monkeypatch.setattr(GENERATOR, "RESULTS", tmp_path)
    monkeypatch.setattr(GENERATOR, "BENCH", tmp_path / "bench.json")
    with pytest.raises(ClipfuseError, match=rf"run '{row.run}' seed \d+ is plain at step \d+"):
        GENERATOR.model_table()
