"""Class groups in an experiment: ``<group>_mIoU`` from a row's per-class IoU, names checked
against the datasets when the spec is read, the confusion matrix kept in ``metrics.json`` and
the confusions within a group in the report."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_config, write_folder_dataset
from PIL import Image

from clipfuse.config import dump_config
from clipfuse.errors import ClipfuseError
from clipfuse.research.experiments import RunSpec, load_spec, write_report
from clipfuse.research.experiments.groups import confusion_shares, group_fields, group_miou
from clipfuse.research.experiments.report import results_markdown
from clipfuse.research.experiments.spec import ExperimentSpec


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: on a busy 2-core machine two threads make tiny steps much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def row(run: str, seed: int, per_class: dict, miou: float = 50.0, **more) -> dict:
    return {
        "run": run,
        "seed": seed,
        "method": "convformer",
        "mIoU": miou,
        "per_class": per_class,
        "config": f"out/{run}/seed{seed}/config.yaml",
        **more,
    }


def test_group_miou_skips_a_class_without_iou_and_counts_a_zero():
    # car was never present in val (no IoU: null); bus was predicted but never labelled (0)
    per_class = {"sky": 90.0, "road": 60.0, "car": None, "bus": 0.0, "Traffic-Sign": 30.0}
    assert group_miou(per_class, ["road", "car", "bus", "traffic sign"]) == pytest.approx(30.0)
    assert group_miou(per_class, ["car"]) is None
    fields = group_fields({"tail": ("road", "car", "bus")}, {}, {"per_class": per_class})
    assert fields == {"tail_mIoU": pytest.approx(30.0)}


def test_group_miou_in_the_report_and_its_comparisons(tmp_path):
    """Rows without the group key (as read back from an old results.json) get it from their
    per_class when the report is written, and the comparisons are made on it."""
    runs = tuple(RunSpec(name, Path("base.yaml"), (), {}, (0, 1)) for name in ("a", "b"))
    spec = ExperimentSpec(
        name="groups",
        runs=runs,
        metrics=("mIoU", "tail_mIoU"),
        class_groups={"tail": ("road", "car")},
        comparisons=(("b", "a"),),
    )
    rows = [
        row("a", 0, {"sky": 90.0, "road": 10.0, "car": None}),
        row("a", 1, {"sky": 90.0, "road": 20.0, "car": 40.0}),
        row("b", 0, {"sky": 90.0, "road": 15.0, "car": None}),
        row("b", 1, {"sky": 90.0, "road": 30.0, "car": 50.0}),
    ]
    markdown = results_markdown(spec, Path("out"), rows)
    assert "| a | 2 | 20.00 ± 14.14 |" in markdown  # tail: 10 (car absent), then (20 + 40) / 2
    assert "| b | 2 | 27.50 ± 17.68 |" in markdown  # 15, then 40
    assert "Groups: tail (2): road, car." in markdown
    write_report(spec, tmp_path / "out", [tmp_path / "report"], rows=rows)
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["tail_mIoU"] for r in results["rows"]] == [10.0, 30.0, 15.0, 40.0]
    assert results["summary"][0]["tail_mIoU"]["mean"] == pytest.approx(20.0)
    tail = [c for c in results["comparisons"] if c["metric"] == "tail_mIoU"]
    assert [c["differences"] for c in tail] == [[5.0, 10.0]]
    assert "| `b` − `a` | tail_mIoU | paired t | 2 |" in markdown
    header = (tmp_path / "report" / "results.csv").read_text().splitlines()[0]
    assert "tail_mIoU" in header.split(",")


def write_spec(folder: Path, data_root: Path, **changes) -> Path:
    dump_config(tiny_config(data_root, "plain"), folder / "base.yaml")
    spec = {"name": "tiny", "base": str(folder / "base.yaml"), "runs": {"plain": {}}, **changes}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_group_names_are_checked_against_every_run_s_classes(tmp_path):
    data_root = write_folder_dataset(tmp_path / "tiny")  # sky, road, car
    spec = load_spec(
        write_spec(
            tmp_path,
            data_root,
            class_groups={"rare": ["Car", "ROAD"]},
            confusion_groups={"ground": ["road", "car"]},
            metrics=["mIoU", "rare_mIoU"],
        )
    )
    assert spec.class_groups == {"rare": ("car", "road")}  # as the dataset spells them
    assert spec.metrics == ("mIoU", "rare_mIoU")
    for change, message in [
        (
            {"class_groups": {"tail": ["road", "bus"]}},
            "class_groups: group 'tail' names 'bus', not a class of the dataset of run 'plain' "
            r"\(3 classes: sky, road, car\)",
        ),
        (
            {"confusion_groups": {"x": ["car", "lorry"]}},
            "confusion_groups: group 'x' names 'lorry'",
        ),
        ({"confusion_groups": {"x": ["car"]}}, "at least 2 class name"),
        ({"class_groups": {"t": ["car", "Car"]}}, "lists a class twice"),
        ({"class_groups": {"unseen": ["car"]}}, "would shadow unseen_mIoU"),
        ({"metrics": ["mIoU", "tail_mIoU"]}, "unknown metric 'tail_mIoU'.*class_groups"),
    ]:
        with pytest.raises(ClipfuseError, match=message) as error:
            load_spec(write_spec(tmp_path, data_root, **change))
        assert "\n" not in str(error.value)


def test_the_final_confusion_matrix_is_in_metrics_json_and_in_eval(tmp_path):
    from clipfuse.engine import evaluate, train

    data_root = write_folder_dataset(tmp_path / "tiny")
    out = tmp_path / "run"
    train(tiny_config(data_root, "plain"), out)
    metrics = json.loads((out / "metrics.json").read_text())
    confusion = metrics["confusion"]
    assert [entry["name"] for entry in metrics["per_class"]] == ["sky", "road", "car"]
    assert len(confusion) == 3 and all(len(line) == 3 for line in confusion)
    assert all(isinstance(n, int) for line in confusion for n in line)
    masks = [np.asarray(Image.open(p)) for p in sorted((data_root / "masks" / "val").glob("*"))]
    labelled = [np.bincount(m[m != 255].ravel(), minlength=3) for m in masks]
    assert sum(map(sum, confusion)) == sum(m.size - (m == 255).sum() for m in masks)
    assert [sum(line) for line in confusion] == np.sum(labelled, axis=0).tolist()  # rows: truth
    hits = np.diagonal(np.array(confusion))
    assert metrics["aAcc"] == pytest.approx(100 * hits.sum() / sum(map(sum, confusion)))
    text = (out / "metrics.json").read_text()
    assert f"    {json.dumps(confusion[0])}," in text  # one line per row of the matrix
    evaluated = evaluate(out / "checkpoints" / "last.ckpt", quiet=True)  # clipfuse eval --json
    assert sum(map(sum, evaluated["confusion"])) == sum(map(sum, confusion))


def test_confusions_within_a_group_on_a_hand_made_matrix():
    #            predicted: coat jacket blazer shoes
    confusion = [
        [60, 20, 10, 10],  # coat: 100 labelled pixels
        [5, 10, 0, 35],  # jacket: 50
        [0, 0, 0, 0],  # blazer: none labelled
        [1, 0, 0, 99],  # shoes
    ]
    names = ["coat", "jacket", "blazer", "shoes"]
    groups = {"outerwear": ("coat", "jacket", "blazer")}
    shares = confusion_shares(confusion, names, groups)["outerwear"]
    assert shares["coat"] == {
        "pixels": 100,
        "predicted": {"coat": 60.0, "jacket": 20.0, "blazer": 10.0},
        "other": 10.0,
    }
    assert shares["jacket"]["predicted"] == {"coat": 10.0, "jacket": 20.0, "blazer": 0.0}
    assert shares["jacket"]["other"] == 70.0 and shares["jacket"]["pixels"] == 50
    assert shares["blazer"] == {
        "pixels": 0,
        "predicted": {"coat": None, "jacket": None, "blazer": None},
        "other": None,
    }
    assert confusion_shares(None, names, groups) is None

    # the report: per run, the mean over its seeds; seed 1 predicts every coat pixel right
    other_seed = [[100, 0, 0, 0], [0, 50, 0, 0], [0, 0, 0, 0], [0, 0, 0, 100]]
    metrics = {"per_class": [{"name": name} for name in names]}
    rows = [
        row("cf", seed, {}, **group_fields({}, groups, {}, {**metrics, "confusion": matrix}))
        for seed, matrix in enumerate((confusion, other_seed))
    ] + [row("old", 0, {})]  # recorded without a confusion matrix
    spec = ExperimentSpec(
        name="confusions",
        runs=(
            RunSpec("cf", Path("b.yaml"), (), {}, (0, 1)),
            RunSpec("old", Path("b.yaml"), (), {}, (0,)),
        ),
        confusion_groups=groups,
    )
    markdown = results_markdown(spec, Path("out"), rows)
    assert "### outerwear" in markdown
    assert "| run | class | pixels | coat | jacket | blazer | other |" in markdown
    assert "| cf | coat | 100 | **80.0** | 10.0 | 5.0 | 5.0 |" in markdown
    assert "| cf | jacket | 50 | 5.0 | **60.0** | 0.0 | 35.0 |" in markdown
    assert "| cf | blazer | 0 | – | – | – | – |" in markdown
    assert "| old | coat | – | – | – | – | – |" in markdown
