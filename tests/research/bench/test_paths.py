"""``clipfuse bench --paths --parts``: every inference path timed side by side on tiny models,
whole and by part; the ONNX exports and int8 quantizations run once for the module (through
the command line)."""

import contextlib
import io
import json
import sys

import pytest
import torch
from helpers import error_line, write_folder_dataset, write_tiny_configs

from clipfuse.cli import main
from clipfuse.errors import ClipfuseError
from clipfuse.research.bench.bench import bench
from clipfuse.research.bench.candidates import create_from_spec, load_candidates
from clipfuse.research.bench.parts import PARTS, model_parts, part_inputs
from clipfuse.research.bench.paths import PATHS, checked_paths

TINY = ["--size", "64", "64", "--batch", "1", "2", "--threads", "1", "--repeats", "2"]
TINY += ["--warmup", "1", "--train-steps", "0", "--no-memory"]


@pytest.fixture(scope="module")
def config_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    return write_tiny_configs(write_folder_dataset(root / "data"), root)


@pytest.fixture(scope="module")
def every_path(config_files, tmp_path_factory):
    """``clipfuse bench`` of two tiny models on every path (eager-fp32 timed unasked): the
    printed table and the JSON result (``--output``)."""
    output = tmp_path_factory.mktemp("result") / "bench.json"
    args = ["bench", "--config", *map(str, config_files), *TINY, "--output", str(output)]
    args += ["--paths", "eager-fp32-cl", "eager-bf16", "eager-bf16-cl", "ort-int8", "ort-fp32"]
    args += ["--parts"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return printed.getvalue(), json.loads(output.read_text())


def test_every_path_gets_a_positive_median(every_path):
    _, result = every_path
    shown = ["eager-fp32", "eager-fp32-cl", "eager-bf16", "eager-bf16-cl", "ort-int8", "ort-fp32"]
    assert result["settings"]["paths"] == shown  # eager-fp32 first, then as asked
    assert result["settings"]["onnx_exporter"] == "torchscript"
    assert set(result["machine"]["peaks"]) == {"fp32", "bf16", "int8"}
    assert all(peak["gflops"] > 0 for peak in result["machine"]["peaks"].values())
    for row in result["rows"]:
        assert list(row["paths"]) == shown
        for summaries in row["paths"].values():
            assert set(summaries) == {"1", "2"}
            for summary in summaries.values():
                assert summary["median"] > 0 and len(summary["samples"]) == 2


def test_ratios_are_consistent(every_path):
    _, result = every_path
    rows, peaks = result["rows"], result["machine"]["peaks"]
    first = rows[0]["paths"]
    for row in rows:
        # the main table's latency is the eager-fp32 path, from the same timer
        for batch, summary in row["latency_ms"].items():
            assert summary.items() <= row["paths"]["eager-fp32"][batch].items()
        for path, summaries in row["paths"].items():
            for batch, summary in summaries.items():
                median = summary["median"]
                assert summary["per_image"] == pytest.approx(median / int(batch))
                assert summary["x_first"] == pytest.approx(median / first[path][batch]["median"])
                reference = row["paths"]["eager-fp32"][batch]["median"]
                assert summary["x_eager_fp32"] == pytest.approx(median / reference)
                # x first x (first model's x eager-fp32) = x eager-fp32 x (eager-fp32's x first)
                assert summary["x_first"] * first[path][batch]["x_eager_fp32"] == pytest.approx(
                    summary["x_eager_fp32"] * row["paths"]["eager-fp32"][batch]["x_first"]
                )
                gflops = 2 * row["gmacs"] * int(batch) / (median / 1000)
                assert summary["gflops"] == pytest.approx(gflops)
                peak = peaks[PATHS[path].arithmetic]["gflops"]
                assert summary["peak_fraction"] == pytest.approx(gflops / peak)
    assert all(s["x_first"] == 1.0 for p in first.values() for s in p.values())
    assert all(s["x_eager_fp32"] == 1.0 for r in rows for s in r["paths"]["eager-fp32"].values())


def test_the_command_prints_the_paths_table(every_path):
    table, result = every_path
    assert "inference paths: median ms of 2 calls" in table
    assert "int8 " in table and "GOP/s (onnxruntime MatMulInteger u8 x s8" in table
    assert "bf16 " in table and "(torch.mm bf16" in table
    assert "ort-int8: random weights, calibrated on 4 random images" in table
    lines = table.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("model") and "x eager" in line)
    assert "b1 ms" in lines[top] and "b2 ms/img" in lines[top] and "% peak" in lines[top]
    for row in result["rows"]:
        start = next(i for i in range(top, len(lines)) if lines[i].startswith(f"{row['name']} "))
        shown = result["settings"]["paths"]
        for offset, path in enumerate(shown):
            assert path in lines[start + offset].split()
        median = row["paths"]["ort-int8"]["2"]["per_image"]
        assert f"{median:.1f}" in lines[start + shown.index("ort-int8")]


def test_unknown_paths_are_a_one_line_error_naming_the_valid_ones(config_files, capsys):
    valid = "eager-fp32, eager-fp32-cl, eager-bf16, eager-bf16-cl, ort-fp32, ort-int8"
    with pytest.raises(ClipfuseError, match=f"unknown path\\(s\\) eager-fp16: .*{valid}"):
        bench(config_files, paths=["eager-fp32", "eager-fp16"])
    assert main(["bench", "--config", *map(str, config_files), "--paths", "ort-int4"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "ort-int4" in line and valid in line
    with pytest.raises(ClipfuseError, match="onnxruntime on the CPU"):
        checked_paths(["eager-bf16", "ort-fp32"], torch.device("cuda"))
    assert checked_paths(["eager-bf16", "eager-bf16"], torch.device("cuda")) == (
        "eager-fp32",
        "eager-bf16",
    )
    assert checked_paths([], torch.device("cpu")) == ()


def test_channels_last_bench_reports_the_channels_last_path(config_files):
    result = bench(
        config_files[:1],
        size=(64, 64),
        batches=(1,),
        threads=1,
        repeats=2,
        warmup=0,
        train_steps=0,
        memory=False,
        channels_last=True,
        paths=["eager-fp32-cl"],
    )
    [row] = result["rows"]
    assert list(row["paths"]) == ["eager-fp32", "eager-fp32-cl"]
    samples = row["paths"]["eager-fp32-cl"]["1"]["samples"]
    assert row["latency_ms"]["1"]["samples"] == samples
    assert result["settings"]["onnx_exporter"] is None
    assert "peaks" in result["machine"] and "int8" not in result["machine"]["peaks"]


def test_a_missing_onnxruntime_names_the_extra(config_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ClipfuseError) as error:
        bench(
            config_files[:1],
            size=(64, 64),
            batches=(1,),
            threads=1,
            train_steps=0,
            memory=False,
            paths=["ort-int8"],
        )
    message = str(error.value)
    assert "bench --paths ort-int8 needs onnxruntime" in message
    assert "pip install 'clipfuse[export]'" in message and "\n" not in message


def test_the_help_names_every_path(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside the hyphenated names
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    printed = capsys.readouterr().out
    assert all(path in printed for path in PATHS)
    assert "[--onnx]" not in printed  # the pre-1.0 alias of --paths ort-fp32 is gone


def test_every_part_is_timed_on_every_path(every_path):
    _, result = every_path
    shown = result["settings"]["paths"]
    plain, convformer = (row["name"] for row in result["rows"])
    assert list(result["parts"]) == [plain, convformer]
    assert list(result["parts"][plain]["parts"]) == ["backbone", "decoder", "upsampling"]
    assert list(result["parts"][convformer]["parts"]) == list(PARTS)
    for row in result["rows"]:
        figures = result["parts"][row["name"]]
        assert list(figures["sum"]) == shown
        gmacs = sum(entry["gmacs"] for entry in figures["parts"].values())
        assert gmacs == pytest.approx(row["gmacs"])  # the parts cover the whole model
        assert figures["parts"]["upsampling"]["gmacs"] == 0
        for path in shown:
            medians = [entry["paths"][path]["median"] for entry in figures["parts"].values()]
            assert all(median > 0 for median in medians)
            assert figures["sum"][path] == pytest.approx(sum(medians))
            shares = [entry["paths"][path]["share"] for entry in figures["parts"].values()]
            assert sum(shares) == pytest.approx(1)
            assert figures["whole"][path] == row["paths"][path]["1"]["median"]


def test_the_parts_table_shows_each_model_and_path(every_path):
    table, result = every_path
    lines = table.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("inference by part"))
    assert all(f"{part} ms" in lines[top + 2] for part in PARTS)
    for name, figures in result["parts"].items():
        start = next(i for i in range(top, len(lines)) if lines[i].startswith(f"{name} "))
        for offset, path in enumerate(figures["sum"]):
            assert path in lines[start + offset].split()
            assert f"{figures['sum'][path]:.1f}" in lines[start + offset]


def test_the_parts_run_in_turn_give_the_model_output(config_files):
    torch.manual_seed(0)
    candidate = load_candidates([config_files[1]], False, [])[0]  # the Conv-Former
    model = create_from_spec(candidate.spec)[0].eval()
    images = torch.randn(1, 3, 64, 96)
    parts = model_parts(model, (64, 96))
    inputs = part_inputs(parts, images, None)
    with torch.no_grad():
        expected = model(images)["logits"]
        assert torch.equal(parts["upsampling"](*inputs["upsampling"]), expected)
        fused, _ = parts["language head"](*inputs["language head"])
        assert torch.equal(inputs["decoder"][-1], fused)


def test_parts_without_paths_time_the_eager_fp32_path(config_files):
    result = bench(
        [config_files[0]],
        size=(64, 64),
        batches=[1],
        repeats=1,
        warmup=0,
        train_batch=0,
        memory=False,
        parts=True,
        threads=1,
    )
    assert result["settings"]["paths"] == ["eager-fp32"]
    (figures,) = result["parts"].values()
    assert list(figures["sum"]) == ["eager-fp32"] and figures["whole"]["eager-fp32"] > 0
