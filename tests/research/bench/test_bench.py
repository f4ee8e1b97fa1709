"""``clipfuse bench``: the table and JSON structure on tiny configs (a few seconds)."""

import json
import os

import pytest
from helpers import tiny_config

from clipfuse.cli import main
from clipfuse.errors import ClipfuseError
from clipfuse.research.bench.bench import bench, format_bench
from clipfuse.research.bench.paths import PATHS

TINY = {"size": (64, 64), "batches": (1, 2), "threads": 1, "repeats": 2, "warmup": 1}


def check_rows(result: dict, names: list[str], batches=("1", "2")) -> None:
    assert [row["name"] for row in result["rows"]] == names
    first = result["rows"][0]
    assert first["ratios"] and all(value == 1.0 for value in first["ratios"].values())
    assert result["machine"]["matmul_gflops"] > 0
    assert result["machine"]["threads"] == 1
    assert result["machine"]["cores"] == len(os.sched_getaffinity(0))
    for row in result["rows"]:
        assert row["gmacs"] > 0 and row["params_m"] > 0
        assert set(row["latency_ms"]) == set(batches)
        for summary in row["latency_ms"].values():
            assert summary["median"] > 0 and summary["iqr"] >= 0
            assert len(summary["samples"]) == result["settings"]["repeats"]
        for batch in batches:
            expected = 2 * row["gmacs"] * int(batch) / (row["latency_ms"][batch]["median"] / 1e3)
            assert row["achieved_gflops"][batch] == pytest.approx(expected)
            assert row["peak_fraction"][batch] == pytest.approx(
                expected / result["machine"]["matmul_gflops"]
            )
        ratio = row["latency_ms"]["1"]["median"] / first["latency_ms"]["1"]["median"]
        assert row["ratios"]["latency_b1"] == pytest.approx(ratio)


def test_bench_rows_ratios_and_table(config_files):
    result = bench(config_files, train_batch=2, train_steps=1, memory=False, **TINY)
    check_rows(result, ["tiny-plain", "tiny-convformer"])
    convformer = result["rows"][1]
    assert convformer["method"] == "convformer" and "fusion" in convformer["groups"]
    assert convformer["ratios"]["gmacs"] > 1.0  # the fusion module costs something
    for row in result["rows"]:
        assert row["train_images_per_s"] > 0
        assert len(row["train_step_ms"]["samples"]) == 1
        assert "memory_mb" not in row and "paths" not in row
    table = format_bench(result)
    assert "tiny-plain" in table and "tiny-convformer" in table
    assert "matmul peak" in table and "b2 ms/img" in table and "train img/s" in table
    assert f"1 threads of {result['machine']['cores']} usable cores" in table
    json.dumps(result)  # JSON-able


def test_bench_onnx_and_smp_reference(config_files):
    result = bench(
        config_files[:1],
        train_steps=0,
        memory=False,
        paths=["ort-fp32"],
        smp_reference=True,
        **TINY,
    )
    check_rows(result, ["tiny-plain", "smp-FPN"])
    smp = result["rows"][1]
    assert smp["method"] == "smp-fpn" and smp["num_classes"] == 3
    for row in result["rows"]:
        assert set(row["paths"]["ort-fp32"]) == {"1", "2"}
        assert row["paths"]["ort-fp32"]["1"]["x_first"] > 0
    assert "ort-fp32" in format_bench(result)


def test_bench_memory_in_a_subprocess(config_files):
    result = bench(config_files[1:], train_batch=2, train_steps=1, memory=True, **TINY)
    check_rows(result, ["tiny-convformer"])
    row = result["rows"][0]
    memory = row["memory_mb"]
    # parameters and buffers (BatchNorm statistics, the text embeddings), fp32
    assert memory["weights"] == pytest.approx(row["params_m"] * 1e6 * 4 / 2**20, rel=0.1)
    assert memory["inference"] >= 0 and memory["train"] > 0
    assert "infer MB b2" in format_bench(result)


def test_bench_cli_json(config_files, capsys):
    args = ["bench", "--config", *map(str, config_files), "--size", "64", "64"]
    args += ["--batch", "1", "2", "--threads", "1", "--repeats", "2", "--warmup", "0"]
    args += ["--train-steps", "0", "--no-memory", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    check_rows(result, ["tiny-plain", "tiny-convformer"])
    assert result["settings"]["train_batch"] == 0
    assert "train_images_per_s" not in result["rows"][0]


def test_bench_errors(config_files, tmp_path, capsys):
    with pytest.raises(ClipfuseError, match="not found"):
        bench([tmp_path / "missing.yaml"], **TINY)
    with pytest.raises(ClipfuseError, match="batch"):
        bench(config_files, **{**TINY, "batches": (0,)})
    assert main(["bench", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_training_is_timed_per_precision_and_layout(config_files, capsys):
    main(
        ["bench", "--config", *map(str, config_files), "--size", "64", "64", "--batch", "1"]
        + ["--threads", "1", "--repeats", "1", "--warmup", "0", "--no-memory"]
        + ["--train-batch", "2", "--train-steps", "1", "--train-precision", "32-true"]
        + ["bf16-mixed", "--train-memory-format", "contiguous", "channels_last", "--json"]
    )
    result = json.loads(capsys.readouterr().out)
    modes = ["32-true", "32-true+channels_last", "bf16-mixed", "bf16-mixed+channels_last"]
    assert result["settings"]["train_modes"] == modes
    for row in result["rows"]:
        assert list(row["train"]) == modes
        assert row["train"]["32-true"]["speedup"] == 1.0
        for entry in row["train"].values():
            assert entry["images_per_s"] == pytest.approx(2000 / entry["step_ms"]["median"])
            assert entry["speedup"] == pytest.approx(
                row["train"]["32-true"]["step_ms"]["median"] / entry["step_ms"]["median"]
            )
    table = format_bench(result)
    assert "speed-up over 32-true" in table and "bf16-mixed+channels_last ms" in table
    # beside them, what `auto` takes on this machine at this thread count (clipfuse.cpu_probe)
    auto = result["machine"]["auto"]
    assert auto["train"] in modes and auto["inference_path"] in PATHS
    assert auto["train_note"].startswith(f"training in {auto['train'].split('+')[0]} with ")
    assert f"auto: inference on {auto['inference_path']}, training in " in table


def test_bench_steps_with_the_loss_the_config_trains_with(folder_dataset, capsys):
    import torch

    from clipfuse.research.bench.candidates import candidate_loss_args, load_candidates
    from clipfuse.research.bench.timing import random_batch, sgd_optimizer, train_step

    config = tiny_config(folder_dataset, loss="ohem", ohem_min_kept=8, class_weight="balanced")
    [candidate] = load_candidates([{**config, "name": "tail"}], False, None)
    announced = capsys.readouterr().err
    assert "tail's train.class_weight balanced is timed with weights of 1" in announced
    arguments = candidate_loss_args(candidate.spec)
    assert arguments["loss"] == "ohem" and arguments["ohem_min_kept"] == 8
    assert arguments["class_weight"] == [1.0, 1.0, 1.0]
    assert candidate_loss_args({"smp": {"backbone": "x", "classes": 3}}) == {}
    model = torch.nn.Conv2d(3, 3, 1)
    before = model.weight.detach().clone()
    images, labels = random_batch(2, (8, 8), torch.device("cpu"), 3)
    train_step(model, sgd_optimizer(model), images, labels, arguments)
    assert not torch.equal(model.weight, before)
