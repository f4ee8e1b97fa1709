"""``clipfuse bench --train-profile``: the training step by part, on tiny configs."""

import json
from functools import partial

import pytest
import torch

from clipfuse.cli import main
from clipfuse.errors import ClipfuseError
from clipfuse.research.bench.bench import bench, format_bench
from clipfuse.research.bench.candidates import create_from_spec, load_candidates
from clipfuse.research.bench.timing import mode_steps, random_batch, round_robin
from clipfuse.research.bench.train_profile import count_step_flops, measure_train_profile

TINY = {"size": (64, 64), "batches": (1,), "threads": 1, "repeats": 1, "warmup": 0}
SPLIT = ["backbone", "head_decoder", "loss", "backward", "optimizer"]


def test_a_model_without_backbone_is_one_forward_part():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 1))
    images, labels = random_batch(2, (8, 8), torch.device("cpu"), 3)
    [(mode, copy, step)] = mode_steps(model, [("32-true", False)], images, labels, {})
    assert mode == ("32-true", False) and copy is not model and copy.training
    marks = []
    step(mark=marks.append)
    assert marks == ["zero_grad", "forward", "loss", "backward", "step"]
    flops = count_step_flops(copy, step)
    assert list(flops) == ["optimizer", "forward", "loss", "backward"]
    forward = 2 * 2 * 64 * (4 * 3 * 9 + 3 * 4)
    assert flops["forward"] == forward
    assert flops["backward"] == forward + 2 * 2 * 64 * 3 * 4  # no gradient of the images
    assert flops["loss"] == flops["optimizer"] == 0  # not matrix products or convolutions


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as bench's tests: two threads on a busy machine crawl
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_each_profiled_step_is_the_sum_of_its_parts(config_files):
    candidates = load_candidates(config_files, False, None)
    for candidate in candidates:
        candidate.model, _ = create_from_spec(candidate.spec)
    timer = partial(round_robin, warmup=1, repeats=3, sync=lambda: None)
    modes = [("32-true", False), ("32-true", True)]
    measured = measure_train_profile(
        candidates, modes, 2, (64, 64), torch.device("cpu"), 3, timer, lambda message: None
    )
    assert measured["matmul_peak"] == {}  # fp32 only: bench's own peak
    for name in ("tiny-plain", "tiny-convformer"):
        for mode in ("32-true", "32-true+channels_last"):
            entry = measured["models"][name][mode]
            assert entry["dtype"] == "float32"
            assert len(entry["step_s"]) == len(entry["parts_s"]) == 3
            covered = []
            for seconds, parts in zip(entry["step_s"], entry["parts_s"], strict=True):
                assert sorted(parts) == sorted(SPLIT)
                assert min(parts.values()) > 0 and sum(parts.values()) <= seconds
                covered.append(sum(parts.values()) / seconds)
            # outside the parts: the hook's registration; a busy machine may preempt any call
            assert max(covered) > 0.9


def test_bench_profiles_the_training_step(config_files):
    result = bench(
        config_files,
        train_batch=2,
        train_steps=3,
        memory=False,
        smp_reference=True,
        train_precisions=("32-true", "bf16-mixed"),
        train_profile=True,
        **TINY,
    )
    profile = result["train_profile"]
    peaks = profile["matmul_peak"]
    assert set(peaks) == {"float32", "bfloat16"}
    assert peaks["float32"]["gflops"] == result["machine"]["matmul_gflops"]
    # the matrix is smaller where the CPU emulates bf16 (clipfuse.research.bench.timing.matmul_peak)
    assert peaks["bfloat16"]["gflops"] > 0 and peaks["bfloat16"]["n"] in (256, 512, 1024, 2048)
    for row in result["rows"]:
        by_mode = profile["models"][row["name"]]
        assert list(by_mode) == ["32-true", "bf16-mixed"]
        for mode, entry in by_mode.items():
            check_mode(entry, row, mode, peaks)
    json.dumps(result)
    table = format_bench(result)
    assert "training step by part, batch 2" in table
    assert "head+decoder" in table and "unprofiled" in table and "bfloat16" in table


def check_mode(entry: dict, row: dict, mode: str, peaks: dict) -> None:
    parts = entry["parts"]
    assert list(parts) == SPLIT  # smp's encoder is its backbone
    assert entry["dtype"] == ("bfloat16" if mode == "bf16-mixed" else "float32")
    step_ms = entry["step_ms"]["median"]
    assert entry["parts_ms_sum"] == pytest.approx(step_ms, rel=0.3)
    assert entry["unprofiled_step_ms"] == row["train"][mode]["step_ms"]["median"]
    for part in ("backbone", "head_decoder", "backward"):
        figures = parts[part]
        assert figures["gflop"] > 0 and figures["share"] == figures["ms"]["median"] / step_ms
        assert figures["gflops"] == pytest.approx(figures["gflop"] / figures["ms"]["median"] * 1e3)
        peak = peaks[entry["dtype"]]["gflops"]
        assert figures["peak_fraction"] == pytest.approx(figures["gflops"] / peak)
    assert parts["optimizer"]["gflop"] == 0 and parts["optimizer"]["gflops"] is None
    forward = parts["backbone"]["gflop"] + parts["head_decoder"]["gflop"]
    assert forward == pytest.approx(2 * row["gmacs"] * 2)  # the model's forward, batch 2
    if "backbone" in row["groups"]:
        assert parts["backbone"]["gflop"] == pytest.approx(4 * row["groups"]["backbone"]["gmacs"])
    assert entry["gflop"] == pytest.approx(sum(p["gflop"] for p in parts.values()))
    assert entry["gflops"] == pytest.approx(entry["gflop"] / step_ms * 1e3)


def test_cli_train_profile_prints_the_table(config_files, capsys):
    args = ["bench", "--config", str(config_files[0]), "--size", "64", "64", "--batch", "1"]
    args += ["--threads", "1", "--repeats", "1", "--warmup", "0", "--no-memory"]
    assert main([*args, "--train-steps", "1", "--train-profile"]) == 0
    table = capsys.readouterr().out
    assert "training step by part, batch 2: median ms of 1 steps" in table
    for label in ("backbone", "head+decoder", "loss", "backward", "optimizer", "step"):
        assert f" {label} " in table
    assert main([*args, "--train-steps", "0", "--train-profile"]) == 2
    assert "--train-profile needs training" in capsys.readouterr().err
    with pytest.raises(ClipfuseError, match="needs training"):
        bench(config_files, train_batch=0, train_profile=True, **TINY)
