"""The inference paths ``clipfuse bench --paths`` times side by side: every way a user can run
a model, on the same models, batch sizes and random weights, in one process.

* ``eager-fp32``: the PyTorch model in ``eval()`` under ``torch.inference_mode()``, fp32,
  model and input in the default (contiguous, NCHW) layout;
* ``eager-fp32-cl``: the same with the model and the input in ``torch.channels_last``;
* ``eager-bf16`` / ``eager-bf16-cl``: the same under bf16 autocast, as ``clipfuse eval`` and
  ``predict`` run the model with ``eval.precision=bf16-mixed``
  (:func:`clipfuse.precision.inference_dtype`, :func:`clipfuse.evaluation.tta.infer_probabilities`;
  the logits only: no resizing or soft-max);
* ``ort-fp32``: the model exported as ``clipfuse export`` exports it
  (:func:`clipfuse.inference.export.export_onnx`; the benchmark's exporter is ``torchscript``
  unless told, the same graph, faster to export) run by onnxruntime's CPU provider with all
  graph optimisations and the benchmark's thread count;
* ``ort-int8``: that export quantized by ``clipfuse export --quantize int8``'s
  :func:`clipfuse.inference.quantize.quantize_int8` (static QDQ, int8 weights per channel,
  uint8 activations), calibrated on :data:`CALIBRATION_IMAGES` random images of the benchmark
  size: random weights and random calibration data, so it measures speed, not accuracy.

``eager-fp32`` is always timed: it is the reference of the ``x eager-fp32`` ratios. All paths x
models x batch sizes are timed by one :func:`clipfuse.research.bench.timing.round_robin`. Each
path's achieved GFLOP/s (``2 x GMACs x batch / median``) is a fraction of the matmul peak of its
arithmetic: fp32 (:func:`clipfuse.research.bench.timing.matmul_peak`) for ``eager-fp32*`` and
``ort-fp32``, the same ``torch.mm`` in bf16 for ``eager-bf16*``, and for ``ort-int8``
onnxruntime's ``MatMulInteger`` of a uint8 by a constant int8 square matrix, the u8 x s8 MLAS
GEMM that onnxruntime's quantized convolutions and matmuls run on (:func:`int8_matmul_peak`).
The bf16 and int8 peaks are measured before and after the timings; the best counts.
"""

import copy
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.extras import require
from clipfuse.precision import inference_dtype
from clipfuse.research.bench.bench_rows import latency_summaries
from clipfuse.research.bench.candidates import Candidate
from clipfuse.research.bench.timing import inference_runner, matmul_peak, random_batch

CALIBRATION_IMAGES = 4
REFERENCE = "eager-fp32"
Samples = dict[str, dict[int, list[float]]]  # seconds of the timed calls per model and batch


@dataclass(frozen=True)
class InferencePath:
    """How a path runs: ``eager`` PyTorch or ``ort`` (onnxruntime); ``arithmetic`` names the
    matmul peak it is compared with (and, for eager paths, the autocast)."""

    runtime: str
    arithmetic: str
    channels_last: bool = False


PATHS = {
    "eager-fp32": InferencePath("eager", "fp32"),
    "eager-fp32-cl": InferencePath("eager", "fp32", channels_last=True),
    "eager-bf16": InferencePath("eager", "bf16"),
    "eager-bf16-cl": InferencePath("eager", "bf16", channels_last=True),
    "ort-fp32": InferencePath("ort", "fp32"),
    "ort-int8": InferencePath("ort", "int8"),
}
EVAL_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}


def main_path(channels_last: bool) -> str:
    """The path of the main latency table: eager fp32 in the layout of ``--channels-last``."""
    return "eager-fp32-cl" if channels_last else REFERENCE


def checked_paths(paths: Sequence[str], device: torch.device) -> tuple[str, ...]:
    """``paths`` without repeats, ``eager-fp32`` first (none: no paths table); refuses
    unknown names and onnxruntime paths off the CPU."""
    unknown = [path for path in paths if path not in PATHS]
    if unknown:
        raise ClipfuseError(
            f"bench: unknown path(s) {', '.join(unknown)}: expected some of {', '.join(PATHS)}"
        )
    if device.type != "cpu" and any(PATHS[path].runtime == "ort" for path in paths):
        raise ClipfuseError("bench: the ort-* paths run onnxruntime on the CPU; use --device cpu")
    return tuple(dict.fromkeys([REFERENCE, *paths])) if paths else ()


def measure_paths(
    candidates: list[Candidate],
    paths: Sequence[str],
    batches: Sequence[int],
    job: dict,
    device: torch.device,
    channels_last: bool,
    exporter: str,
    timer: Callable[[list], dict[str, list[float]]],
    say: Callable[[str], None],
) -> tuple[Samples, dict[str, Samples], dict[str, dict]]:
    """Seconds of each timed call on the main table's path (:func:`main_path`) per candidate
    name and batch size, the same per path of ``paths``, all timed together by ``timer``
    (:func:`clipfuse.research.bench.timing.round_robin`), and the bf16 / int8 matmul peaks the paths
    need (best of before and after the timings). ``job`` has the input ``size`` and the
    ``threads``; the candidates' models are in the layout ``channels_last`` says."""
    paths = list(dict.fromkeys([main_path(channels_last), *paths]))
    size, threads = job["size"], job["threads"]
    models = {c.name: model_layouts(c.model, channels_last, paths) for c in candidates}
    sessions = _ort_sessions(candidates, models, paths, size, threads, exporter, say)
    peaks = _extra_peaks(paths, device, threads, say)
    runners = []
    for batch in batches:
        images, _ = random_batch(batch, size, device, 1)
        for candidate in candidates:
            for path in paths:
                if PATHS[path].runtime == "ort":
                    run = _ort_runner(sessions[path, candidate.name], images.cpu().numpy())
                else:
                    run = _eager_runner(models[candidate.name], PATHS[path], images)
                runners.append((f"{path}|{candidate.name}|{batch}", run))
    say(f"inference, {len(paths)} path(s) x {len(candidates)} model(s) x {len(batches)} batch(es)")
    samples = timer(runners)
    for kind, peak in _extra_peaks(paths, device, threads, say).items():
        peaks[kind] = max(peaks[kind], peak, key=lambda p: p["gflops"])
    result: dict[str, Samples] = {p: {} for p in paths}
    for key, seconds in samples.items():
        path, name, batch = key.split("|")
        result[path].setdefault(name, {})[int(batch)] = seconds
    return result[main_path(channels_last)], result, peaks


def model_layouts(
    model: nn.Module, channels_last: bool, paths: Sequence[str]
) -> dict[bool, nn.Module]:
    """``model`` (in the ``channels_last`` layout or not) in each layout ``paths`` need: itself
    in its own layout, a copy in the other; the ort paths export the contiguous one."""
    needed = {PATHS[path].channels_last and PATHS[path].runtime == "eager" for path in paths}
    layouts = {}
    for layout in needed:
        if layout == channels_last:
            layouts[layout] = model
        else:
            memory_format = torch.channels_last if layout else torch.contiguous_format
            layouts[layout] = copy.deepcopy(model).to(memory_format=memory_format)
    return layouts


def _eager_runner(
    models: dict[bool, nn.Module], path: InferencePath, images: torch.Tensor
) -> Callable[[], None]:
    memory_format = torch.channels_last if path.channels_last else torch.contiguous_format
    inputs = images.contiguous(memory_format=memory_format)
    dtype = inference_dtype(EVAL_PRECISION[path.arithmetic], images.device)
    return inference_runner(models[path.channels_last], inputs, dtype)


def _ort_runner(session, array: np.ndarray) -> Callable[[], None]:
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: array})


def session_options(ort: ModuleType, threads: int) -> object:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle onnxruntime threads spin by default and would slow the PyTorch call timed next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _ort_sessions(
    candidates: list[Candidate],
    models: dict[str, dict[bool, nn.Module]],
    paths: Sequence[str],
    size: Sequence[int],
    threads: int,
    exporter: str,
    say: Callable[[str], None],
) -> dict[tuple[str, str], object]:
    """An onnxruntime session per ort path and candidate: the export of its contiguous model
    (``models``) and its int8 version, written to a temporary folder that is removed once the
    sessions hold them."""
    ort_paths = [path for path in paths if PATHS[path].runtime == "ort"]
    if not ort_paths:
        return {}
    ort = require("onnxruntime", f"bench --paths {' '.join(ort_paths)}")
    from clipfuse.inference.export import export_onnx
    from clipfuse.inference.quantize import quantize_int8

    generator = torch.Generator().manual_seed(0)
    calibration = [
        torch.randn(1, 3, *size, generator=generator).numpy() for _ in range(CALIBRATION_IMAGES)
    ]
    options = session_options(ort, threads)
    sessions = {}
    with tempfile.TemporaryDirectory(prefix="clipfuse-bench-") as folder:
        for candidate in candidates:
            say(f"ONNX export of {candidate.name} ({exporter})")
            files = {"ort-fp32": Path(folder) / f"{candidate.name}.onnx"}
            export_onnx(models[candidate.name][False], files["ort-fp32"], size, exporter=exporter)
            if "ort-int8" in ort_paths:
                say(f"int8 quantization of {candidate.name}")
                files["ort-int8"] = Path(folder) / f"{candidate.name}.int8.onnx"
                quantize_int8(files["ort-fp32"], files["ort-int8"], calibration)
            for path in ort_paths:
                sessions[path, candidate.name] = ort.InferenceSession(
                    str(files[path]), options, providers=["CPUExecutionProvider"]
                )
    return sessions


def _extra_peaks(
    paths: Sequence[str], device: torch.device, threads: int, say: Callable[[str], None]
) -> dict[str, dict]:
    """The bf16 and int8 matmul peaks that ``paths`` are compared with."""
    kinds = {PATHS[path].arithmetic for path in paths}
    peaks = {}
    if "bf16" in kinds:
        say("bf16 matmul peak")
        peak = matmul_peak(device, dtype=torch.bfloat16)
        peaks["bf16"] = {**peak, "how": "torch.mm bf16"}
    if "int8" in kinds:
        say("int8 matmul peak")
        peaks["int8"] = int8_matmul_peak(threads)
    return peaks


def int8_matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float | int]:
    """Best GOP/s (``gflops``: 2 n^3 integer operations) of onnxruntime's ``MatMulInteger`` of
    a uint8 ``n x n`` input by a constant int8 ``n x n`` weight, with ``threads`` threads,
    over ``repeats`` after a warm-up: the u8 x s8 GEMM of the ``ort-int8`` path."""
    ort = require("onnxruntime", "bench --paths ort-int8")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 128, (n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_matmul_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(
        model.SerializeToString(),
        session_options(ort, threads),
        providers=["CPUExecutionProvider"],
    )
    session.run(None, {"a": a})
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"a": a})
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * n**3 / best / 1e9, "n": n, "how": "onnxruntime MatMulInteger u8 x s8"}


def add_path_figures(
    rows: list[dict],
    machine: dict,
    samples: dict[str, Samples],
    paths: Sequence[str],
    extra_peaks: dict[str, dict],
) -> None:
    """With ``paths``: ``machine["peaks"]``, the fp32 matmul peak of ``machine`` and the
    ``extra_peaks`` of :func:`measure_paths`, and ``row["paths"][path][batch]``: the ms
    summary of each of ``paths`` (``per_image`` too), ``x_first`` (its median over the first
    row's in the same path), ``x_eager_fp32`` (over this row's ``eager-fp32``), ``gflops`` and
    ``peak_fraction`` (of the peak of the path's arithmetic)."""
    if not paths:
        return
    fp32 = {"gflops": machine["matmul_gflops"], "n": machine["matmul_n"], "how": "torch.mm fp32"}
    peaks = machine["peaks"] = {"fp32": fp32, **extra_peaks}
    for row in rows:
        row["paths"] = {path: latency_summaries(samples[path][row["name"]]) for path in paths}
    first = rows[0]["paths"]
    for row in rows:
        for path, summaries in row["paths"].items():
            peak = peaks[PATHS[path].arithmetic]["gflops"]
            for batch, summary in summaries.items():
                median = summary["median"]
                summary["x_first"] = median / first[path][batch]["median"]
                summary["x_eager_fp32"] = median / row["paths"][REFERENCE][batch]["median"]
                summary["gflops"] = 2 * row["gmacs"] * int(batch) / (median / 1000)
                summary["peak_fraction"] = summary["gflops"] / peak


def format_paths(result: dict, name_width: int) -> str:
    """The table of the inference paths: model x path, per batch size the median ms (per
    image), ``x first``, ``x eager-fp32`` and % of the path's matmul peak."""
    settings, peaks = result["settings"], result["machine"]["peaks"]
    paths, batches = settings["paths"], [str(b) for b in settings["batches"]]
    lines = [
        f"inference paths: median ms of {settings['repeats']} calls after {settings['warmup']} "
        "warm-up, all paths x models x batches interleaved round-robin, per image for batches "
        "> 1",
        "x first = ratio to the first model in the same path; x eager-fp32 = ratio to the same "
        "model's eager-fp32; % peak = 2 x GMACs x batch / median, of the path's matmul peak",
        "peaks: "
        + ", ".join(
            f"{kind} {peak['gflops']:.1f} G{'OP' if kind == 'int8' else 'FLOP'}/s "
            f"({peak['how']}, {peak['n']}^2)"
            for kind, peak in peaks.items()
        ),
    ]
    if "ort-int8" in paths:
        lines.append(
            f"ort-int8: random weights, calibrated on {CALIBRATION_IMAGES} random images: "
            "it times the int8 graph, it says nothing of its accuracy"
        )
    header = f"{'model':<{name_width}}{'path':<15}"
    for batch in batches:
        label = f"b{batch} ms" + ("/img" if batch != "1" else "")
        header += f"{label:>13}{'x first':>9}{'x eager-fp32':>14}{'% peak':>8}"
    lines.append(header)
    for row in result["rows"]:
        for index, path in enumerate(paths):
            line = f"{row['name'] if index == 0 else '':<{name_width}}{path:<15}"
            for batch in batches:
                summary = row["paths"][path][batch]
                line += f"{summary['per_image']:>13.1f}{summary['x_first']:>9.2f}"
                line += f"{summary['x_eager_fp32']:>14.2f}{100 * summary['peak_fraction']:>8.1f}"
            lines.append(line)
    return "\n".join(lines)
