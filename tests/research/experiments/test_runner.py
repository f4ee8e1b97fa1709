"""The experiment runner on the tiny folder dataset: a 2-run x 2-seed grid at 2 steps, an
interrupted run resumed, a finished grid skipped, and the report's numbers and files."""

import csv
import dataclasses
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from helpers import tiny_config, write_folder_dataset

from clipfuse.cli import main
from clipfuse.config import dump_config
from clipfuse.errors import ClipfuseError
from clipfuse.research.experiments import RunSpec, format_mean_std, load_spec, mean_std, summarize
from clipfuse.research.experiments import runner as runner_module
from clipfuse.research.experiments.report import results_markdown
from clipfuse.research.experiments.runner import Status, plan, rewrite_report, run_experiment
from clipfuse.research.experiments.spec import ExperimentSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Resuming mid-epoch is what an interrupted run does; Lightning warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint")


class CrashAt(L.Callback):
    """Simulates a crash (power cut, pre-emption) once ``step`` is reached, before that step's
    checkpoint is written (Lightning runs checkpoint callbacks last)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a busy 2-core machine two threads make these tiny steps 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_spec(folder: Path, data_root: Path, **changes) -> Path:
    """A base config (tiny Conv-Former) and a spec of 2 runs x 2 seeds at 2 steps."""
    base = tiny_config(
        data_root, "convformer", max_steps=2, val_every=2, checkpoint_every=1, progress_bar=False
    )
    dump_config(base, folder / "base.yaml")
    spec = {
        "name": "tiny",
        "base": str(folder / "base.yaml"),
        "overrides": ["train.log_every=1"],
        "seeds": [0, 1],
        "eval_size": [32, 32],
        "latency": {"warmup": 0, "repeats": 1},
        "runs": {
            # plain takes no head options: only a replaced (not merged) head_kwargs builds
            "plain": {"overrides": ["model.method=plain"], "replace": {"model.head_kwargs": {}}},
            "convformer": {},
        },
        **changes,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Run the grid twice: the first attempt crashes in the last (run, seed), the second
    resumes it. Records every train() call of the second attempt."""
    folder = tmp_path_factory.mktemp("experiment")
    data_root = write_folder_dataset(folder / "tiny")
    spec_path = write_spec(folder, data_root)
    out = folder / "out"
    victim = out / "convformer" / "seed1"
    real_train = runner_module.train

    def crash_in_victim(config, out_dir, resume=False, callbacks=None):
        if Path(out_dir) == victim:
            callbacks = [*(callbacks or []), CrashAt(step=2)]
        return real_train(config, out_dir, resume=resume, callbacks=callbacks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module, "train", crash_in_victim)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_experiment(spec_path, out=out, progress=None)
    partial_rows = list(csv.DictReader((out / "results.csv").open()))
    (victim / "metrics.json").unlink(missing_ok=True)  # an interrupted run: no final metrics
    interrupted_step = torch.load(victim / "checkpoints" / "last.ckpt", weights_only=True)[
        "global_step"
    ]
    statuses = {(job.run, job.seed): job.status for job in plan(load_spec(spec_path), out)}

    calls = []

    def spy(config, out_dir, resume=False, callbacks=None):
        calls.append({"dir": Path(out_dir), "resume": resume, "config": config})
        return real_train(config, out_dir, resume=resume, callbacks=callbacks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module, "train", spy)
        run_experiment(spec_path, out=out, progress=None)
    return {
        "spec": spec_path,
        "out": out,
        "victim": victim,
        "partial_rows": partial_rows,
        "interrupted_step": interrupted_step,
        "statuses": statuses,
        "calls": calls,
    }


def test_all_runs_finish_and_the_results_have_one_row_per_run_and_seed(grid):
    out = grid["out"]
    for name in ("plain", "convformer"):
        for seed in (0, 1):
            run_dir = out / name / f"seed{seed}"
            assert json.loads((run_dir / "metrics.json").read_text())["step"] == 2
            saved = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert saved["seed"] == seed and saved["model"]["method"] == name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["run"], r["seed"]) for r in rows] == [
        ("plain", "0"),
        ("plain", "1"),
        ("convformer", "0"),
        ("convformer", "1"),
    ]
    for row in rows:
        assert 0 <= float(row["mIoU"]) <= 100
        assert float(row["gmacs"]) > 0 and float(row["params_m"]) > 0
        assert float(row["latency_ms"]) > 0 and float(row["train_seconds"]) > 0
        assert {"IoU.sky", "IoU.road", "IoU.car"} <= set(row)
        assert row["config"] == f"{row['run']}/seed{row['seed']}/config.yaml"  # no machine's path
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == 4 and [s["n"] for s in data["summary"]] == [2, 2]
    assert set(data["rows"][0]["per_class"]) == {"sky", "road", "car"}
    plain, convformer = data["rows"][0], data["rows"][2]
    assert convformer["gmacs"] > plain["gmacs"]  # the language head costs something
    markdown = (out / "results.md").read_text()
    assert "| plain | plain | 2 |" in markdown and "| convformer | convformer | 2 |" in markdown
    assert "finished: 4 of 4" in markdown and "![val mIoU against GMACs](results.png)" in markdown
    assert (out / "results.png").read_bytes().startswith(PNG_MAGIC)
    best = max(rows, key=lambda row: float(row["mIoU"]))
    best_config = (out / best["run"] / f"seed{best['seed']}" / "config.yaml").read_text()
    assert (out / "best_config.yaml").read_text() == best_config
    assert f"retrain it with `clipfuse train --config {out}/best_config.yaml" in markdown


def test_a_partial_grid_already_has_a_report(grid):
    assert [(r["run"], r["seed"]) for r in grid["partial_rows"]] == [
        ("plain", "0"),
        ("plain", "1"),
        ("convformer", "0"),
    ]


def test_the_interrupted_run_is_resumed_and_nothing_else_is_trained(grid):
    assert grid["interrupted_step"] == 1  # < max_steps
    assert grid["statuses"] == {
        ("plain", 0): Status.DONE,
        ("plain", 1): Status.DONE,
        ("convformer", 0): Status.DONE,
        ("convformer", 1): Status.RESUME,
    }
    assert grid["calls"] == [{"dir": grid["victim"], "resume": True, "config": None}]
    final = torch.load(grid["victim"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 2
    result = json.loads((grid["victim"] / "result.json").read_text())
    assert result["resumed"] is True and result["step"] == 2
    # resumed from step 1 with the random state the checkpoint kept: still a strict pair
    assert result["resumes"] == [{"step": 1, "random_state": True}]


def forbid_training(monkeypatch, why: str) -> None:
    """Make the runner fail the test if it trains or measures anything."""

    def forbidden(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr(runner_module, "train", forbidden)
    monkeypatch.setattr(runner_module, "measure_model", forbidden)


def test_running_a_finished_grid_again_trains_and_measures_nothing(grid, monkeypatch, capsys):
    forbid_training(monkeypatch, "a finished run was trained or measured again")
    before = (grid["out"] / "results.csv").read_text()
    jobs = run_experiment(grid["spec"], out=grid["out"])
    assert [job.status for job in jobs] == [Status.DONE] * 4
    assert (grid["out"] / "results.csv").read_text() == before
    assert "4 done, 0 to measure, 0 to resume, 0 to run" in capsys.readouterr().out


def test_dry_run_and_only_through_the_cli(grid, capsys):
    assert main(["experiment", str(grid["spec"]), "--out", str(grid["out"]), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "4 (run, seed) pairs" in printed and "4 done" in printed
    args = ["experiment", str(grid["spec"]), "--out", str(grid["out"] / "new"), "--dry-run"]
    assert main([*args, "--only", "convformer"]) == 0
    printed = capsys.readouterr().out
    assert "2 (run, seed) pairs" in printed and "2 to run" in printed and "plain" not in printed
    assert not (grid["out"] / "new").exists()  # a dry run writes nothing
    assert main([*args, "--only", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main([*args, "--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 (run, seed) pairs" in printed and "    0  " not in printed
    assert main([*args, "--seeds", "7"]) == 2
    assert "seed(s) [7] are not in the selected runs" in capsys.readouterr().err


def test_report_only_rewrites_the_report_from_the_run_folders(grid, monkeypatch, capsys):
    forbid_training(monkeypatch, "--report-only trained or measured a run")
    before = (grid["out"] / "results.csv").read_text()
    (grid["out"] / "results.md").unlink()
    assert main(["experiment", str(grid["spec"]), "--out", str(grid["out"]), "--report-only"]) == 0
    markdown = (grid["out"] / "results.md").read_text()
    # no comparisons in the spec: every run against the first, paired over seeds 0 and 1
    assert "| `convformer` − `plain` | mIoU | paired t | 2 |" in markdown
    assert (grid["out"] / "results.csv").read_text() == before
    missing = ["experiment", str(grid["spec"]), "--out", str(grid["out"] / "none")]
    assert main([*missing, "--report-only"]) == 2
    assert "no grid folder" in capsys.readouterr().err


def test_a_folder_with_another_config_is_an_error_not_mixed_in(grid, tmp_path):
    spec = yaml.safe_load(grid["spec"].read_text())
    spec["overrides"].append("train.lr=0.5")
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ClipfuseError, match="another config.*train.lr"):
        plan(load_spec(changed), grid["out"])


def test_an_old_folder_is_compared_as_a_resume_reads_it(tmp_path):
    """A folder from before Conv-Former's gates (format 2, no format record): its config.yaml
    names no gate_init, which meant no gates; a spec planning today's gated default differs."""
    planned = tiny_config(write_folder_dataset(tmp_path / "tiny"), "convformer")
    folder = tmp_path / "old"
    (folder / "checkpoints").mkdir(parents=True)
    dump_config(planned, folder / "config.yaml")
    meta = {"config": planned, "class_names": ["sky", "road", "car"], "format_version": 2}
    torch.save({"clipfuse": meta, "state_dict": {}}, folder / "checkpoints" / "last.ckpt")
    with pytest.raises(ClipfuseError, match=r"gate_init \(None there, absent in the spec\)"):
        runner_module.job_status(folder, planned)
    planned["model"]["head_kwargs"]["gate_init"] = None
    assert runner_module.job_status(folder, planned) == (Status.RESUME, None)


def test_mean_and_sample_std_over_seeds_in_the_table():
    def row(run, seed, miou, gmacs=10.0):
        return {
            "run": run,
            "seed": seed,
            "method": "convformer",
            "mIoU": miou,
            "mAcc": 50.0,
            "aAcc": 80.0,
            "gmacs": gmacs,
            "params_m": 5.0,
            "latency_ms": 100.0 + seed,
            "train_seconds": 600.0,
            "per_class": {"sky": miou, "car": None},
            "config": f"out/{run}/seed{seed}/config.yaml",
        }

    rows = [row("a", 0, 40.0), row("a", 1, 44.0), row("a", 2, 42.0), row("b", 0, 30.0, 5.0)]
    a, b = summarize(rows)
    assert a["n"] == 3 and a["mIoU"]["mean"] == pytest.approx(42.0)
    assert a["mIoU"]["std"] == pytest.approx(2.0)  # sample std (n - 1) of 40, 44, 42
    assert a["latency_ms"]["std"] == pytest.approx(1.0)
    assert a["train_minutes"]["mean"] == pytest.approx(10.0)
    assert a["per_class"] == {"sky": pytest.approx(42.0), "car": None}
    assert b["n"] == 1 and b["mIoU"]["std"] is None
    old = summarize([{**row("c", 0, 50.0), "method": "fpn"}])  # recorded before the rename
    assert old[0]["method"] == "plain"
    assert mean_std([1.0, None, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert format_mean_std(42.0, 2.0) == "42.00 ± 2.00"
    assert format_mean_std(5.0, 0.0) == "5.00" and format_mean_std(None, None) == "–"
    runs = tuple(RunSpec(name, Path("base.yaml"), (), {}, (0, 1, 2)) for name in "ab")
    spec = ExperimentSpec(name="known", runs=runs, eval_size=(64, 96))
    markdown = results_markdown(spec, Path("out"), rows)
    table = [line for line in markdown.splitlines() if line.startswith("| a |")]
    assert table == [
        "| a | convformer | 3 | 42.00 ± 2.00 | 50.00 | 80.00 | 10.00 | 5.00 | 101.0 ± 1.0 | 10.0 |",
        "| a | seeding 1 | seeding 1 | seeding 1 |",  # batch streams: rows without a record
        "| a | 42.0 | – |",  # per-class IoU means; car was never present
    ]
    assert "| b | convformer | 1 | 30.00 |" in markdown
    assert "missing: b seed 1, b seed 2" in markdown
    assert "Best single run: `a` seed 1, mIoU 44.00" in markdown
    assert "`clipfuse train --config out/best_config.yaml --out runs/a`" in markdown
    assert "`clipfuse experiment SPEC.yaml --out out`" in markdown  # not the spec's out
    default = results_markdown(spec, spec.default_out(), rows)
    assert "`clipfuse experiment SPEC.yaml`" in default  # no machine's path in a committed report
    kept = dataclasses.replace(spec, report_dir=Path("docs/research/results/known"))
    assert "`clipfuse experiment SPEC.yaml`" in results_markdown(kept, Path("/elsewhere"), rows)


def test_seed_in_an_override_stands_for_the_run_seed(tmp_path):
    data_root = write_folder_dataset(tmp_path / "tiny")
    finetune = {"overrides": ["train.init_from=grid/clip/seed{seed}/checkpoints/last.ckpt"]}
    spec = load_spec(write_spec(tmp_path, data_root, runs={"finetune": finetune}))
    for seed in (0, 1):
        config = spec.run("finetune").config(seed)
        assert config["train"]["init_from"] == f"grid/clip/seed{seed}/checkpoints/last.ckpt"


def test_a_missing_init_from_stops_the_grid_before_any_run(tmp_path):
    """A fine-tune whose checkpoint is neither there nor trained by this call fails at plan
    time, naming the run and the path; one whose source run trains first is planned."""
    data_root = write_folder_dataset(tmp_path / "tiny")
    out = tmp_path / "out"
    finetune = {"overrides": [f"train.init_from={out}/plain/seed{{seed}}/checkpoints/last.ckpt"]}
    spec = write_spec(tmp_path, data_root, runs={"plain": {}, "finetune": finetune})
    jobs = run_experiment(spec, out=out, dry_run=True, progress=None)  # plain trains first
    assert {job.status for job in jobs} == {Status.RUN}
    with pytest.raises(ClipfuseError) as error:
        run_experiment(spec, out=out, only=["finetune"], seeds=[1], dry_run=True, progress=None)
    expected = f"run finetune seed 1: train.init_from {out / 'plain/seed1/checkpoints/last.ckpt'}"
    assert str(error.value).startswith(expected + " does not exist")


def test_spec_errors_are_clear(tmp_path):
    data_root = write_folder_dataset(tmp_path / "tiny")
    path = write_spec(tmp_path, data_root)
    spec = load_spec(path)
    plain = spec.run("plain").config(1)
    assert plain["model"]["head_kwargs"] == {} and plain["seed"] == 1
    assert spec.run("convformer").config(0)["model"]["head_kwargs"]["dim"] == 32
    for change, message in [
        ({"colour": "red"}, "unknown key"),
        ({"overrides": ["seed=3"]}, "set seeds with"),
        ({"seeds": []}, "non-empty list"),
        ({"runs": {"x": {"overrides": ["model.nope=1"]}}}, "unknown config key 'model.nope'"),
        (
            {"runs": {"x": {"replace": {"model.nope": {}}}}},
            "x'.*config key 'model.nope' does not exist",
        ),
        ({"runs": {"bad/name": {}}}, "folder-safe"),
        ({"base": str(tmp_path / "missing.yaml")}, "not found"),
    ]:
        with pytest.raises(ClipfuseError, match=message):
            load_spec(write_spec(tmp_path, data_root, **change))


def test_a_second_runner_on_the_same_grid_folder_is_refused(grid):
    from clipfuse.engine.lock import RunLock

    with RunLock(grid["out"], runner_module.LOCK_FILE):
        with pytest.raises(ClipfuseError, match="in use by another clipfuse experiment"):
            run_experiment(grid["spec"], out=grid["out"])


def test_vocab_eval_scores_finished_runs_and_compares_on_its_metrics(grid, tmp_path, monkeypatch):
    """A spec with ``vocab_eval`` measures a finished run again when its row lacks the
    open-vocabulary scores (no training), keeps eval-vocab's report beside the run and makes
    the comparisons on every metric of ``metrics``."""
    import shutil

    out = tmp_path / "out"
    for run in ("convformer", "plain"):
        shutil.copytree(grid["out"] / "convformer", out / run)  # plain: a copy, for a pair
    spec = yaml.safe_load(grid["spec"].read_text())
    spec["runs"] = {"convformer": {}, "plain": {}}  # both build the convformer of the copies
    spec["vocab_eval"] = {"unseen": ["car"], "gammas": [0, 1, 2]}
    spec["metrics"] = ["mIoU", "unseen_mIoU"]
    spec_path = tmp_path / "vocab.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(runner_module, "train", lambda *a, **k: pytest.fail("trained"))
    jobs = run_experiment(spec_path, out=out, progress=None)
    assert {job.status for job in jobs} == {Status.MEASURE}
    row = json.loads((out / "convformer" / "seed0" / "result.json").read_text())
    report = json.loads((out / "convformer" / "seed0" / "vocab_eval.json").read_text())
    vocab = report["open_vocab"]
    assert vocab["unseen"] == ["car"] and row["vocab_unseen"] == ["car"]
    assert row["unseen_mIoU"] == vocab["unseen_mIoU"] == vocab["per_class"][2]["IoU"]
    assert row["calibrated_gamma"] == vocab["calibrated"]["gamma"] in (0, 1, 2)
    assert row["vocab_path"] == "score_map"
    results = json.loads((out / "results.json").read_text())
    assert [(c["metric"], c["run"]) for c in results["comparisons"]] == [
        ("mIoU", "plain"),
        ("unseen_mIoU", "plain"),
    ]
    assert all(c["differences"] == [0.0, 0.0] for c in results["comparisons"])
    markdown = (out / "results.md").read_text()
    assert "## Open vocabulary (`clipfuse eval-vocab`)" in markdown and "unseen: car" in markdown
    assert "| `plain` − `convformer` | unseen_mIoU | paired t |" in markdown
    assert run_experiment(spec_path, out=out, progress=None)[0].status is Status.DONE
    with pytest.raises(ClipfuseError, match="unknown metric 'unseen_mIoU'.*need vocab_eval"):
        load_spec(write_spec(tmp_path, tmp_path, metrics=["unseen_mIoU"]))


def test_a_new_checkout_continues_the_grid_from_the_records_beside_the_report(
    tmp_path, monkeypatch, capsys
):
    """runs/ is not committed; the small records beside the report are: a fresh run folder
    with the report's records trains nothing already done, and a changed config is refused."""
    data_root = write_folder_dataset(tmp_path / "tiny")
    report = tmp_path / "docs" / "research" / "results" / "tiny"
    spec_path = write_spec(tmp_path, data_root, seeds=[0], report_dir=str(report))
    run_experiment(spec_path, out=tmp_path / "first", only=["plain"], progress=None)
    record = report / "runs" / "plain" / "seed0"
    assert {"config.yaml", "metrics.json", "result.json", "batch_stream.json"} <= {
        path.name for path in record.iterdir()
    }
    assert not list(record.rglob("*.ckpt")) and not list(record.rglob("*.safetensors"))
    first_rows = json.loads((report / "results.json").read_text())["rows"]

    forbid_training(monkeypatch, "a run done in the records was trained again")
    jobs = run_experiment(spec_path, out=tmp_path / "checkout", only=["plain"])
    assert [(job.status, job.folder) for job in jobs] == [(Status.DONE, record)]
    assert "1 done from their records in" in capsys.readouterr().out
    assert json.loads((report / "results.json").read_text())["rows"] == first_rows
    (report / "results.json").unlink()
    rewrite_report(spec_path, out=tmp_path / "fresh", progress=None)  # no grid folder yet
    assert json.loads((report / "results.json").read_text())["rows"] == first_rows
    statuses = {job.run: job.status for job in plan(load_spec(spec_path), tmp_path / "checkout")}
    assert statuses == {"plain": Status.DONE, "convformer": Status.RUN}

    spec = yaml.safe_load(spec_path.read_text())
    spec["overrides"].append("train.lr=0.5")
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ClipfuseError, match=f"{record} holds a run with another config"):
        plan(load_spec(spec_path), tmp_path / "checkout")


def test_evaluation_runs_score_a_trained_run_without_training(tmp_path, monkeypatch):
    """``evaluate: RUN`` scores the run's checkpoints with other evaluation settings or its
    trained weights (EMA); one training, rows paired with it, nothing redone on a rerun."""
    data_root = write_folder_dataset(tmp_path / "tiny")
    runs = {
        "ema": {
            "overrides": ["model.method=plain", "train.ema_decay=0.5"],
            "replace": {"model.head_kwargs": {}},
        },
        "trained": {"evaluate": "ema", "trained_weights": True},
        "ema_48": {"evaluate": "ema", "overrides": ["data.val_size=[48, 48]", "eval.flip=true"]},
    }
    spec_path = write_spec(tmp_path, data_root, seeds=[0], runs=runs)
    calls = []
    real_train = runner_module.train
    monkeypatch.setattr(
        runner_module, "train", lambda *a, **k: calls.append(a[1]) or real_train(*a, **k)
    )
    jobs = run_experiment(spec_path, out=tmp_path / "out", progress=None)
    assert [job.status for job in jobs] == [Status.RUN, Status.EVALUATE, Status.EVALUATE]
    assert calls == [tmp_path / "out" / "ema" / "seed0"]
    rows = {
        r["run"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    }
    ema, trained, flipped = rows["ema"], rows["trained"], rows["ema_48"]
    for row in (trained, flipped):
        assert row["batch_stream"] == ema["batch_stream"] and row["gmacs"] == ema["gmacs"]
        assert row["train_seconds"] == ema["train_seconds"] and row["evaluates"] == "ema"
    checkpoint = tmp_path / "out" / "ema" / "seed0" / "checkpoints" / "last.ckpt"
    from clipfuse.engine import evaluate

    assert trained["mIoU"] == pytest.approx(evaluate(checkpoint, quiet=True, trained=True)["mIoU"])
    assert ema["mIoU"] == pytest.approx(evaluate(checkpoint, quiet=True)["mIoU"])
    wider = evaluate(checkpoint, ["data.val_size=[48, 48]", "eval.flip=true"], quiet=True)
    assert flipped["mIoU"] == pytest.approx(wider["mIoU"])
    saved = yaml.safe_load((tmp_path / "out" / "ema_48" / "seed0" / "config.yaml").read_text())
    assert saved["data"]["val_size"] == [48, 48] and saved["eval"]["flip"] is True
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "`trained` trains nothing: it evaluates `ema`'s checkpoints with its trained" in markdown
    assert {j.status for j in run_experiment(spec_path, out=tmp_path / "out", progress=None)} == {
        Status.DONE
    }
    assert len(calls) == 1


@pytest.mark.parametrize(
    "run, message",
    [
        ({"evaluate": "nope"}, "must name a training run listed before it"),
        ({"evaluate": "plain", "overrides": ["train.max_steps=3"]}, "not train.max_steps"),
        ({"evaluate": "plain", "trained_weights": True}, "has no weight average"),
        ({"evaluate": "plain", "replace": {"model.head_kwargs": {}}}, "unknown key"),
        ({"evaluate": "plain", "seeds": [5]}, "not all plain's seeds"),
        ({"trained_weights": True}, "needs 'evaluate: RUN'"),
    ],
)
def test_evaluation_run_errors_are_clear(tmp_path, run, message):
    data_root = write_folder_dataset(tmp_path / "tiny")
    runs = {"plain": {"overrides": ["model.method=plain"], "replace": {"model.head_kwargs": {}}}}
    with pytest.raises(ClipfuseError, match=message):
        load_spec(write_spec(tmp_path, data_root, runs={**runs, "other": run}))


def test_a_plain_run_is_scored_without_the_open_vocabulary_options(grid, tmp_path):
    """``vocab_eval`` options that only the open-vocabulary path reads (names, unseen, ...) do
    not apply to a model without text: a grid with plain and text-guided runs scores both."""
    import shutil

    from clipfuse.research.experiments.vocab import evaluate_run

    folder = tmp_path / "plain"
    shutil.copytree(grid["out"] / "plain" / "seed0", folder)
    options = {"unseen": ["car"], "names": ["car=automobile"], "gammas": [0, 1]}
    row = evaluate_run(folder, options, "plain")
    assert row["decoder_mIoU"] is not None and row["unseen_mIoU"] is None
    assert json.loads((folder / "vocab_eval.json").read_text())["open_vocab"] is None


def test_a_model_without_open_vocabulary_gets_its_decoder_scores_in_the_row():
    """A ``plain`` model scored by ``vocab_eval`` (e.g. CamVid -> LabelMeFacade through a
    label mapping) has its decoder's mIoU and per-class IoU; the open-vocabulary fields are
    None, shown as – in the report, and compared on the decoder metric."""
    from clipfuse.research.experiments.vocab import VOCAB_METRICS, vocab_row

    decoder = {
        "mIoU": 40.0,
        "per_class": [{"name": "road", "IoU": 70.0}, {"name": "sky", "IoU": 10.0}],
    }
    row = vocab_row({"decoder": decoder, "open_vocab": None, "model": "m", "method": "plain"})
    assert row["decoder_mIoU"] == 40.0 and row["decoder_per_class"] == {"road": 70.0, "sky": 10.0}
    assert row["vocab_path"] is None
    assert all(row[key] is None for key, _ in VOCAB_METRICS[1:])
    spec = ExperimentSpec(
        name="transfer",
        runs=(RunSpec("plain", Path("base.yaml"), (), {}, (0, 1)),),
        vocab_eval={"dataset": "labelmefacade"},
        metrics=("decoder_mIoU",),
    )
    rows = [
        {"run": "plain", "seed": seed, "method": "plain", "mIoU": 60.0, "config": "c.yaml", **row}
        for seed in (0, 1)
    ]
    markdown = results_markdown(spec, Path("out"), rows)
    assert "| plain | 2 | 40.00 | – |" in markdown
    assert "## Decoder IoU per mapped class (eval-vocab)" in markdown


def test_the_best_run_names_the_training_an_evaluation_run_scores():
    spec = ExperimentSpec(
        name="recipe",
        runs=(
            RunSpec("ema", Path("base.yaml"), (), {}, (0,)),
            RunSpec("trained", Path("base.yaml"), (), {}, (0,), "ema", trained_weights=True),
        ),
    )
    rows = [
        {"run": "ema", "seed": 0, "method": "plain", "mIoU": 60.0, "config": "a.yaml"},
        {"run": "trained", "seed": 0, "method": "plain", "mIoU": 61.0, "config": "b.yaml"},
    ]
    rows[1].update(evaluates="ema", trained_weights=True)
    markdown = results_markdown(spec, Path("out"), rows)
    assert "Best single run: `trained` seed 0, mIoU 61.00" in markdown
    assert "(it scores `ema`'s training with `clipfuse eval --trained-weights`)." in markdown
