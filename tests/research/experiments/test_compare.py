"""Comparisons between runs: paired t and Welch intervals checked against hand-computed ones,
the strictness of a pairing, n = 1, the verdict words, the spec's ``comparisons`` key and a
report re-rendered from a results.json (``clipfuse experiment --from``)."""

import json
import math

import pytest
import yaml
from scipy import stats

from clipfuse.cli import main
from clipfuse.errors import ClipfuseError
from clipfuse.research.experiments import load_spec
from clipfuse.research.experiments.compare import (
    compare,
    comparison_markdown,
    seed_pairing,
    stream_markdown,
    verdict,
)

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)
BASE = "configs/plain_mobilenetv2_camvid_192x256_140.yaml"


def row(
    run: str,
    seed: int,
    miou: float,
    seeding: int | None = 2,
    stream: str | None = "ab",
    resumes: list[dict] | None = None,
):
    """A result row; ``resumes`` as batch_stream.json records them (none: trained in one go)."""
    made = {"run": run, "seed": seed, "method": "plain", "mIoU": miou, "mAcc": 1.0, "aAcc": 2.0}
    made["config"] = f"runs/{run}/seed{seed}/config.yaml"
    if seeding is not None:
        made["seeding"] = seeding
        made["batch_stream"] = stream
        made["resumes"] = resumes or []
    return made


def grid(run_values: dict[str, list[float]], **keys) -> list[dict]:
    return [
        row(run, seed, value, **keys)
        for run, values in run_values.items()
        for seed, value in enumerate(values)
    ]


def test_the_paired_interval_and_p_value_are_the_hand_computed_ones():
    # differences 1, 2, 4: mean 7/3, sample variance 7/3, so se = sqrt(7)/3 and t = sqrt(7);
    # with 2 degrees of freedom the two-sided p-value is 1 - t / sqrt(t^2 + 2) = 1 - sqrt(7)/3
    rows = grid({"a": [10.0, 12.0, 15.0], "b": [9.0, 10.0, 11.0]})
    result = compare(rows, "a", "b")
    assert result.test == "paired" and result.seeds == (0, 1, 2)
    assert result.differences == pytest.approx((1.0, 2.0, 4.0))
    assert result.mean == pytest.approx(7 / 3)
    half_width = T_975_DF2 * math.sqrt(7) / 3
    assert result.interval == pytest.approx((7 / 3 - half_width, 7 / 3 + half_width))
    assert result.p_value == pytest.approx(1 - math.sqrt(7) / 3)
    assert result.verdict == "not shown"  # the interval [-1.46, 6.13] holds 0
    assert result.strict and result.pairing == "strict"


def test_the_verdict_follows_the_interval():
    # differences 2, 3, 4: mean 3, sd 1: 3 +- 4.303 / sqrt(3) = [0.52, 5.48] excludes 0
    ahead = compare(grid({"a": [12.0, 13.0, 14.0], "b": [10.0, 10.0, 10.0]}), "a", "b")
    assert ahead.interval == pytest.approx(
        (3 - T_975_DF2 / math.sqrt(3), 3 + T_975_DF2 / math.sqrt(3))
    )
    assert ahead.verdict == "ahead"
    behind = compare(grid({"a": [12.0, 13.0, 14.0], "b": [10.0, 10.0, 10.0]}), "b", "a")
    assert behind.verdict == "behind" and behind.mean == pytest.approx(-3.0)
    assert verdict(None) == "not shown" and verdict((-0.1, 0.2)) == "not shown"
    assert verdict((0.1, 0.2)) == "ahead" and verdict((-0.3, -0.2)) == "behind"


def test_runs_without_a_shared_seed_get_welch():
    # a: 1, 2, 3 (mean 2, variance 1, n 3); b: 2, 4, 6, 8 (mean 5, variance 20/3, n 4)
    rows = grid({"a": [1.0, 2.0, 3.0]}) + [
        row("b", seed, v) for seed, v in zip((5, 6, 7, 8), (2.0, 4.0, 6.0, 8.0), strict=True)
    ]
    result = compare(rows, "a", "b")
    se2 = 1 / 3 + (20 / 3) / 4  # 2.0
    df = se2**2 / ((1 / 3) ** 2 / 2 + ((20 / 3) / 4) ** 2 / 3)  # Welch-Satterthwaite
    half_width = stats.t.ppf(0.975, df) * math.sqrt(se2)
    assert result.test == "welch" and (result.n_run, result.n_baseline) == (3, 4)
    assert result.mean == pytest.approx(-3.0)
    assert result.interval == pytest.approx((-3.0 - half_width, -3.0 + half_width))
    assert result.p_value == pytest.approx(2 * stats.t.sf(3.0 / math.sqrt(se2), df))
    assert not result.strict and result.pairing == "unpaired: no shared seed"
    assert "| `a` − `b` | mIoU | Welch t | 3 vs 4 | – | -3.00 |" in comparison_markdown([result])[2]


def test_strict_only_with_seeding_2_and_the_same_known_batch_stream():
    assert seed_pairing(row("a", 0, 1.0), row("b", 0, 2.0)) is None
    assert seed_pairing(row("a", 0, 1.0, seeding=None), row("b", 0, 2.0)) == "seeding 1"
    assert seed_pairing(row("a", 0, 1.0, seeding=1), row("b", 0, 2.0)) == "seeding 1"
    assert seed_pairing(row("a", 0, 1.0, stream=None), row("b", 0, 2.0)) == "unknown stream"
    assert seed_pairing(row("a", 0, 1.0, stream="cd"), row("b", 0, 2.0)) == "different batches"
    old = compare(grid({"a": [1.0, 2.0], "b": [0.0, 0.5]}, seeding=None), "a", "b")
    assert not old.strict and old.pairing == "not strict: seeding 1"
    assert old.interval is not None  # still paired by seed number, with its interval
    mixed = [
        row("a", 0, 1.0),
        row("a", 1, 2.0, stream="cd"),
        row("a", 2, 4.0, stream=None),
        *grid({"b": [0.0, 0.0, 0.0]}),
    ]
    result = compare(mixed, "a", "b")
    assert not result.strict
    assert result.pairing == "not strict: different batches (seed 1), unknown stream (seed 2)"


def test_strict_only_when_the_record_proves_each_run_is_its_uninterrupted_run():
    exact = [{"step": 70, "random_state": True}]
    assert seed_pairing(row("a", 0, 1.0, resumes=exact), row("b", 0, 2.0)) is None
    reseeded = row("a", 0, 1.0, resumes=[*exact, {"step": 100, "random_state": False}])
    assert seed_pairing(reseeded, row("b", 0, 2.0)) == "resumed without random state"
    assert seed_pairing(row("b", 0, 2.0), reseeded) == "resumed without random state"
    # records older than "resumes": the runner's "resumed" says whether it trained in one go
    older = {key: value for key, value in row("a", 0, 1.0).items() if key != "resumes"}
    assert seed_pairing({**older, "resumed": False}, row("b", 0, 2.0)) is None
    old_resumed = {**older, "resumed": True}
    assert seed_pairing(old_resumed, row("b", 0, 2.0)) == "resumed without random state"
    assert seed_pairing(older, row("b", 0, 2.0)) == "resumes unrecorded"
    # two evaluations of one training score the same weights, however it was resumed
    tta = {**old_resumed, "run": "a_tta", "evaluates": "a"}
    assert seed_pairing(tta, old_resumed) is None
    assert seed_pairing(tta, row("b", 0, 2.0)) == "resumed without random state"
    rows = [old_resumed, row("a", 1, 2.0), *grid({"b": [0.0, 0.5]})]
    result = compare(rows, "a", "b")
    assert not result.strict and result.interval is not None
    assert result.pairing == "not strict: resumed without random state (seed 0)"


def test_one_value_on_a_side_gives_no_interval_and_says_why():
    one_shared = compare(grid({"a": [5.0], "b": [3.0, 4.0, 5.0]}), "a", "b")
    assert one_shared.test == "paired" and one_shared.seeds == (0,)
    assert one_shared.mean == pytest.approx(2.0) and one_shared.interval is None
    assert one_shared.p_value is None and one_shared.verdict == "not shown"
    assert one_shared.note == "one shared seed: no interval"
    line = comparison_markdown([one_shared])[2]
    assert "| +2.00 (seed 0) | +2.00 | – (one shared seed: no interval) | – | not shown |" in line
    rows = [row("a", 0, 5.0), row("b", 1, 3.0), row("b", 2, 4.0)]
    single = compare(rows, "a", "b")
    assert single.test == "welch" and single.interval is None
    assert single.note == "n = 1 on one side: no interval"
    missing = compare(grid({"a": [1.0]}), "a", "b")
    assert missing.test is None and missing.note == "no finished seed of b"


def write_spec(folder, **changes):
    spec = {
        "name": "tiny",
        "base": BASE,
        "seeds": [0, 1, 2],
        "out": str(folder / "grid"),
        "report_dir": str(folder / "report"),
        "runs": {
            "plain": {},
            "longer": {"overrides": ["train.max_steps=200"]},
            "lr": {"overrides": ["train.lr=0.002"]},
        },
        **changes,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_spec_declares_its_comparisons_and_defaults_to_every_run_against_the_first(tmp_path):
    assert load_spec(write_spec(tmp_path)).comparison_pairs() == [
        ("longer", "plain"),
        ("lr", "plain"),
    ]
    spec = load_spec(write_spec(tmp_path, comparisons=["lr:longer"]))
    assert spec.comparison_pairs() == [("lr", "longer")]
    for comparisons, message in [
        ("lr:longer", "must be a list of RUN:BASELINE"),
        (["lr"], "must be RUN:BASELINE"),
        (["lr:lr"], "two different run names"),
        (["lr:nope"], "names no run 'nope'"),
        (["lr:plain", "lr:plain"], "lists 'lr:plain' twice"),
    ]:
        with pytest.raises(ClipfuseError, match=message):
            load_spec(write_spec(tmp_path, comparisons=comparisons))


def test_a_report_is_re_rendered_from_a_results_json_without_run_folders(tmp_path, capsys):
    spec_path = write_spec(tmp_path, comparisons=["lr:plain"])
    rows = grid({"plain": [50.0, 51.0, 52.0], "lr": [51.0, 53.0, 56.0]}, seeding=None)
    results = tmp_path / "old" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps({"experiment": "tiny", "rows": rows, "summary": []}))
    assert main(["experiment", str(spec_path), "--report-only", "--from", str(results)]) == 0
    report = tmp_path / "report"
    data = json.loads((report / "results.json").read_text())
    assert data["rows"] == rows  # the rows as they were
    assert [s["run"] for s in data["summary"]] == ["plain", "lr"]
    (comparison,) = data["comparisons"]
    assert comparison["run"] == "lr" and comparison["differences"] == [1.0, 2.0, 4.0]
    assert comparison["interval"] == pytest.approx(
        [7 / 3 - T_975_DF2 * math.sqrt(7) / 3, 7 / 3 + T_975_DF2 * math.sqrt(7) / 3]
    )
    markdown = (report / "results.md").read_text()
    assert "## Comparisons" in markdown
    assert (
        "| `lr` − `plain` | mIoU | paired t | 3 | +1.00 / +2.00 / +4.00 (seeds 0/1/2) | +2.33 |"
        in markdown
    )
    assert "| not shown | not strict: seeding 1 |" in markdown
    assert "missing: longer seed 0, longer seed 1, longer seed 2" in markdown
    assert (report / "results.png").is_file() and (report / "results.csv").is_file()
    assert not (tmp_path / "grid").exists() and not (tmp_path / "old" / "results.md").exists()
    assert "best_config.yaml not rewritten" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"experiment": "another", "rows": rows}))
    assert main(["experiment", str(spec_path), "--from", str(other)]) == 2
    assert "holds experiment 'another', the spec is 'tiny'" in capsys.readouterr().err
    args = ["experiment", str(spec_path), "--from", str(results), "--seeds", "0"]
    assert main(args) == 2


def test_the_report_shows_each_runs_batch_stream_by_seed():
    rows = [
        row("plain", 0, 50.0, stream="aaaaaaaaaaaaaaaa"),
        row("convformer", 0, 51.0, stream="aaaaaaaaaaaaaaaa"),
        row("plain", 1, 50.0, stream="bbbbbbbbbbbbbbbb"),
        row("convformer", 1, 51.0, stream=None),
        row("old", 0, 49.0, seeding=None),
    ]
    lines = stream_markdown(rows)
    assert lines[0] == "| run | seed 0 | seed 1 |"
    assert lines[2] == "| plain | `aaaaaaaaaaaa` | `bbbbbbbbbbbb` |"
    assert lines[3] == "| convformer | `aaaaaaaaaaaa` | unknown |"
    assert lines[4] == "| old | seeding 1 | – |"
