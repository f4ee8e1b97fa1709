"""The open-vocabulary measurement: score map vs decoder on the trained labels."""

import importlib.util
import json
from pathlib import Path

import pytest

from clipfuse import ClipfuseError
from clipfuse.inference.open_vocab import evaluate_open_vocab

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "open_vocab_eval.py"


def test_decoder_path_matches_clipfuse_eval(tiny_run, tmp_path):
    from clipfuse.engine import evaluate

    report = evaluate_open_vocab(
        tiny_run.pretrained, json_path=tmp_path / "report.json", progress=False
    )
    assert report["images"] == 4 and report["split"] == "val"
    evaluated = evaluate(tiny_run.checkpoint, quiet=True)
    assert report["decoder"]["mIoU"] == pytest.approx(evaluated["mIoU"], abs=1e-9)
    assert 0 <= report["score_map"]["mIoU"] <= 100
    assert report["gap_mIoU"] == pytest.approx(
        report["decoder"]["mIoU"] - report["score_map"]["mIoU"]
    )
    assert json.loads((tmp_path / "report.json").read_text())["score_map"] == report["score_map"]


def test_script_with_limit_and_queries(tiny_run, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("open_vocab_eval", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "eval.json"
    argv = ["--model", str(tiny_run.checkpoint), "--out", str(out), "--limit", "2"]
    assert script.main([*argv, "--queries", "heavens, street, automobile"]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["queries"] == ["heavens", "street", "automobile"]
    assert "score_map  mIoU" in capsys.readouterr().out
    assert script.main([*argv, "--queries", "only one"]) == 2
    assert "one per trained class" in capsys.readouterr().err


def test_needs_a_language_guided_model(tmp_path, folder_dataset):
    from helpers import tiny_config

    from clipfuse.build import build_model
    from clipfuse.inference import ClipfuseModel

    config = tiny_config(folder_dataset, "plain")
    names = ["sky", "road", "car"]
    ClipfuseModel(build_model(config, names, pretrained=False), config, names).save_pretrained(
        tmp_path / "fpn"
    )
    with pytest.raises(ClipfuseError, match="has no score map"):
        evaluate_open_vocab(tmp_path / "fpn", progress=False)
