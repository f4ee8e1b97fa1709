"""Side-by-side speed benchmark of configs' models in one process (``clipfuse bench``).

For each model (random weights: speed does not depend on them) it measures, at one input size
and thread count:

* inference latency at each batch size: ``eval()``, ``torch.inference_mode()``, ``warmup``
  untimed calls, then ``repeats`` timed calls; median, inter-quartile range and std (ms);
* optionally the same for the ONNX export run by onnxruntime (same thread count);
* training throughput: images/s of full SGD steps (forward, cross-entropy plus the auxiliary
  score-map loss where the model has one, backward, optimizer step) at ``train_batch``;
* peak memory. On CPU, each model is built and run once in a fresh subprocess (so that no
  other model's buffers or allocator caches count) and reports, in MB, ``weights`` (parameters
  and buffers), ``inference`` (peak resident memory during one forward at the
  largest batch, above the level before it) and ``train`` (the same for one training step,
  gradients and momentum included). The peak is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
  reset to the current RSS before each phase through ``/proc/self/clear_refs`` (Linux);
  ``tracemalloc`` does not see PyTorch's allocations. On CUDA:
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, in this process;
* GMACs and parameters (:func:`clipfuse.analysis.segmentor_cost`, one image);
* the machine's fp32 matmul peak (GFLOP/s, best of a few ``n x n @ n x n`` products, measured
  before and after the timings) and each model's achieved GFLOP/s
  (``2 x GMACs x batch / median latency``) as a fraction of it.

Timed calls are interleaved round-robin (one call of each model in turn, the starting model
rotating every round), so slow drifts of the machine (other jobs, clocks, heat) spread over all
models instead of biasing the ones timed last. Ratios are to the first model.
"""

import contextlib
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.losses import segmentation_loss
from clipfuse.precision import inference_dtype

DEFAULT_BATCHES = (1, 4)
SMP_NAME = "smp-FPN"


@dataclass
class Candidate:
    """One row: a name and what the memory subprocess needs to rebuild the model."""

    name: str
    spec: dict  # {"config": dict} or {"smp": {"backbone": str, "classes": int}}
    info: dict = field(default_factory=dict)
    model: nn.Module | None = None


def _quiet():
    """Model building may print notes on stdout; keep stdout for the table / JSON."""
    return contextlib.redirect_stdout(sys.stderr)


def build_from_spec(spec: dict) -> tuple[nn.Module, dict]:
    """The model of a candidate spec (random init) and facts about it."""
    if "smp" in spec:
        import segmentation_models_pytorch as smp

        opts = spec["smp"]
        model = smp.FPN(f"tu-{opts['backbone']}", encoder_weights=None, classes=opts["classes"])
        info = {"method": "smp-fpn", "backbone": opts["backbone"], "num_classes": opts["classes"]}
        return model, info
    from clipfuse.engine.run import class_names_of, cost_model

    config = spec["config"]
    class_names = class_names_of(config)
    with _quiet():
        model = cost_model(config, class_names)
    return model, _info(config, class_names)


def _info(config: dict, class_names: list[str]) -> dict:
    model = config["model"]
    return {
        "method": model["method"],
        "backbone": model["backbone"],
        "decoder": model["decoder"],
        "head_kwargs": dict(model["head_kwargs"]),
        "num_classes": len(class_names),
    }


def _logits(outputs) -> torch.Tensor:
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def _summary(seconds: Sequence[float]) -> dict:
    ms = sorted(1000 * s for s in seconds)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
        std = statistics.stdev(ms)
    else:
        q1 = q3 = ms[0]
        std = 0.0
    return {
        "median": statistics.median(ms),
        "iqr": q3 - q1,
        "std": std,
        "min": ms[0],
        "samples": [round(v, 3) for v in ms],
    }


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def matmul_peak(
    device: torch.device, n: int | None = None, repeats: int = 5
) -> dict[str, float | int]:
    """Best fp32 GFLOP/s of ``n x n @ n x n`` (2 n^3 FLOPs) over ``repeats`` after a warm-up."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = _synchronizer(device)
    best = math.inf
    with torch.inference_mode():
        torch.mm(a, b)
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            torch.mm(a, b)
            sync()
            best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * n**3 / best / 1e9, "n": n}


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_args: dict | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """One step as the engine trains: forward (under autocast when ``dtype`` is given), the
    engine's loss with the config's ``aux_weight`` / ``aux_temperature``, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        outputs = model(images)
        if not isinstance(outputs, dict):
            outputs = {"logits": outputs}
        loss = segmentation_loss(outputs, labels, **(loss_args or {}))["loss"]
    loss.backward()
    optimizer.step()


def _loss_args(spec: dict) -> dict:
    """The loss settings of a candidate's config (smp has none)."""
    train = spec.get("config", {}).get("train", {})
    return {key: train[key] for key in ("aux_weight", "aux_temperature") if key in train}


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(parameters, lr=1e-4, momentum=0.9)


def _inputs(batch: int, size: Sequence[int], device: torch.device, classes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *size, generator=generator).to(device)
    labels = torch.randint(0, classes, (batch, *size), generator=generator).to(device)
    return images, labels


def _rss_mb(field_name: str) -> float | None:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process in MB, None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: ``echo 5 > clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _tensor_mb(model: nn.Module) -> float:
    """Parameters and buffers in MB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def memory_worker(spec_path: str) -> None:
    """Entry point of the memory subprocess: prints one JSON line of MB figures.

    ``weights``: parameters and buffers; ``inference`` / ``train``: peak
    resident memory during one forward at the largest batch / one training step, above the
    level before it. The peak is ``getrusage(RUSAGE_SELF).ru_maxrss``, reset to the current
    RSS before each phase where Linux allows it (``/proc/self/clear_refs``); elsewhere the
    figures are deltas of the never-reset peak and can only under-estimate.
    """
    import resource

    job = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)

    def peak_mb() -> float:  # ru_maxrss is in KiB on Linux (bytes on macOS)
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20

    def start_phase() -> float:
        if _reset_peak_rss():
            current = _rss_mb("VmRSS")
            if current is not None:
                return current
        return peak_mb()

    size, classes = job["size"], job["classes"]
    images, labels = _inputs(job["batch"], size, torch.device("cpu"), classes)
    train_images, train_labels = _inputs(job["train_batch"], size, torch.device("cpu"), classes)
    model, _ = build_from_spec(job["spec"])
    model.eval()
    result = {"weights": _tensor_mb(model)}
    base = start_phase()
    with torch.inference_mode():
        model(images)
    result["inference"] = peak_mb() - base
    if job["train_batch"] > 0:
        model.train()
        optimizer = _optimizer(model)
        base = start_phase()
        _train_step(model, optimizer, train_images, train_labels, _loss_args(job["spec"]))
        result["train"] = peak_mb() - base
    if not _reset_peak_rss():
        result["peak_not_reset"] = True
    print(json.dumps(result))


def _memory_cpu(candidate: Candidate, job: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        spec_path = Path(folder) / "job.json"
        spec_path.write_text(json.dumps({**job, "spec": candidate.spec}))
        code = "import sys; from clipfuse.analysis.bench import memory_worker; memory_worker(sys.argv[1])"
        env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"])}
        result = subprocess.run(
            [sys.executable, "-c", code, str(spec_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ClipfuseError(f"bench: memory measurement of {candidate.name} failed: {tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _memory_cuda(model: nn.Module, job: dict, device: torch.device) -> dict:
    mb = 2**20
    torch.cuda.synchronize(device)
    weights = torch.cuda.memory_allocated(device)  # this model's, and any other resident
    images, labels = _inputs(job["batch"], job["size"], device, job["classes"])
    torch.cuda.reset_peak_memory_stats(device)
    model.eval()
    with torch.inference_mode():
        model(images)
    result = {
        "weights": _tensor_mb(model),
        "inference": (torch.cuda.max_memory_allocated(device) - weights) / mb,
    }
    if job["train_batch"] > 0:
        train_images, train_labels = _inputs(
            job["train_batch"], job["size"], device, job["classes"]
        )
        optimizer = _optimizer(model)
        model.train()
        torch.cuda.reset_peak_memory_stats(device)
        _train_step(model, optimizer, train_images, train_labels)
        result["train"] = (torch.cuda.max_memory_allocated(device) - weights) / mb
        del optimizer
        model.zero_grad(set_to_none=True)
    return result


def _round_robin(
    runners: list[tuple[str, Callable[[], None]]],
    warmup: int,
    repeats: int,
    sync: Callable[[], None],
) -> dict[str, list[float]]:
    """``warmup + repeats`` rounds; in each, every runner once, the start rotating."""
    samples: dict[str, list[float]] = {key: [] for key, _ in runners}
    for round_index in range(warmup + repeats):
        shift = round_index % len(runners)
        for key, run in runners[shift:] + runners[:shift]:
            sync()
            start = time.perf_counter()
            run()
            sync()
            if round_index >= warmup:
                samples[key].append(time.perf_counter() - start)
    return samples


def _candidates(
    configs: Sequence[str | Path | dict], smp_reference: bool, overrides: Sequence[str] | None
) -> list[Candidate]:
    from clipfuse.config import load_config

    candidates = []
    for item in configs:
        if isinstance(item, dict):
            config = item
            name = config.get("name") or config["model"]["method"]
            config = {k: v for k, v in config.items() if k != "name"}
        else:
            path = Path(item)
            if not path.is_file():
                raise ClipfuseError(f"bench: config {path} not found")
            config = load_config(path, list(overrides or []))
            name = path.stem
        candidates.append(Candidate(name, {"config": config}))
    if not candidates:
        raise ClipfuseError("bench: give at least one config")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ClipfuseError(f"bench: two configs have the same name: {names}")
    if smp_reference:
        first = candidates[0].spec["config"]
        from clipfuse.engine.run import class_names_of

        classes = len(class_names_of(first))
        spec = {"smp": {"backbone": first["model"]["backbone"], "classes": classes}}
        candidates.append(Candidate(SMP_NAME, spec))
    return candidates


def bench(
    configs: Sequence[str | Path | dict],
    size: Sequence[int] = (512, 512),
    batches: Sequence[int] = DEFAULT_BATCHES,
    threads: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    train_batch: int = 2,
    train_steps: int = 3,
    onnx: bool = False,
    onnx_exporter: str = "torchscript",
    smp_reference: bool = False,
    memory: bool = True,
    channels_last: bool = False,
    train_precisions: Sequence[str] = ("32-true",),
    train_channels_last: Sequence[bool] | None = None,
    device: str = "cpu",
    overrides: Sequence[str] | None = None,
    matmul_n: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Benchmark the models of ``configs`` (YAML paths, or config dicts with an optional
    ``name``) side by side; returns the JSON-able result (see :func:`format_bench`).

    ``train_batch=0`` or ``train_steps=0`` skips training; ``memory=False`` skips memory.
    ``overrides`` (``section.key=value``) apply to every config file. Training is timed in
    every combination of ``train_precisions`` (``32-true``, ``bf16-mixed``, ``16-mixed``) and
    ``train_channels_last`` (default: ``[channels_last]``), interleaved; ``x`` compares each
    combination with the first.
    """
    from clipfuse.analysis import count_macs, segmentor_cost
    from clipfuse.models import Segmentor

    say = progress or (lambda message: None)
    size = tuple(int(s) for s in size)
    batches = tuple(sorted({int(b) for b in batches}))
    if len(size) != 2 or min(size) < 32:
        raise ClipfuseError(f"bench: size must be H W of at least 32, got {size}")
    if not batches or batches[0] < 1:
        raise ClipfuseError(f"bench: batch sizes must be positive, got {batches}")
    if repeats < 1 or warmup < 0 or train_batch < 0 or train_steps < 0:
        raise ClipfuseError("bench: repeats must be >= 1 and warmup, train sizes >= 0")
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ClipfuseError("bench: CUDA is not available on this machine")
    if onnx and torch_device.type != "cpu":
        raise ClipfuseError("bench: --onnx times onnxruntime on the CPU; use --device cpu")
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    sync = _synchronizer(torch_device)
    training = train_batch > 0 and train_steps > 0

    load_before = _load_average()
    candidates = _candidates(configs, smp_reference, overrides)
    torch.manual_seed(0)
    for candidate in candidates:
        say(f"building {candidate.name}")
        model, info = build_from_spec(candidate.spec)
        model.eval()
        if isinstance(model, Segmentor):
            cost = segmentor_cost(model, *size)
        else:
            cost = count_macs(model, (1, 3, *size))
        candidate.info = {**info, **cost}
        model.to(torch_device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        candidate.model = model
    classes = max(c.info["num_classes"] for c in candidates)
    job = {
        "size": list(size),
        "batch": batches[-1],
        "train_batch": train_batch if training else 0,
        "classes": classes,
        "threads": threads,
    }

    memory_mb: dict[str, dict] = {}
    if memory:
        for candidate in candidates:
            say(f"memory of {candidate.name}")
            if torch_device.type == "cuda":
                memory_mb[candidate.name] = _memory_cuda(candidate.model, job, torch_device)
            else:
                memory_mb[candidate.name] = _memory_cpu(candidate, job)

    sessions = {}
    if onnx:
        sessions = _onnx_sessions(candidates, size, threads, onnx_exporter, say)

    say("matmul peak")
    peaks = [matmul_peak(torch_device, matmul_n)]

    latency: dict[str, dict[int, list[float]]] = {c.name: {} for c in candidates}
    onnx_latency: dict[str, dict[int, list[float]]] = {c.name: {} for c in candidates}
    for batch in batches:
        say(f"inference, batch {batch}")
        images, _ = _inputs(batch, size, torch_device, classes)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        array = images.cpu().numpy()
        runners = []
        for candidate in candidates:
            runners.append((f"torch/{candidate.name}", _torch_runner(candidate.model, images)))
            if candidate.name in sessions:
                runners.append(
                    (f"onnx/{candidate.name}", _onnx_runner(sessions[candidate.name], array))
                )
        samples = _round_robin(runners, warmup, repeats, sync)
        for candidate in candidates:
            latency[candidate.name][batch] = samples[f"torch/{candidate.name}"]
            if candidate.name in sessions:
                onnx_latency[candidate.name][batch] = samples[f"onnx/{candidate.name}"]

    train_modes = [
        (precision, layout)
        for precision in train_precisions
        for layout in (train_channels_last if train_channels_last is not None else [channels_last])
    ]
    train_seconds: dict[str, dict[str, list[float]]] = {}
    if training:
        say(f"training, batch {train_batch}, {len(train_modes)} precision / layout setting(s)")
        train_seconds = _train_round_robin(
            candidates, train_modes, train_batch, size, torch_device, classes, train_steps, sync
        )
        for candidate in candidates:
            candidate.model.eval()

    peaks.append(matmul_peak(torch_device, matmul_n))  # before and after: the best of both
    peak = max(peaks, key=lambda p: p["gflops"])
    rows = []
    for candidate in candidates:
        info = candidate.info
        row = {
            "name": candidate.name,
            **{k: info[k] for k in ("method", "backbone", "num_classes") if k in info},
            "head_kwargs": info.get("head_kwargs", {}),
            "gmacs": info["gmacs"],
            "params_m": info["params_m"],
            "groups": info.get("groups", {}),
            "latency_ms": {},
            "achieved_gflops": {},
            "peak_fraction": {},
        }
        for batch, seconds in latency[candidate.name].items():
            summary = _summary(seconds)
            summary["per_image"] = summary["median"] / batch
            row["latency_ms"][str(batch)] = summary
            gflops = 2 * info["gmacs"] * batch / (summary["median"] / 1000)
            row["achieved_gflops"][str(batch)] = gflops
            row["peak_fraction"][str(batch)] = gflops / peak["gflops"]
        if onnx_latency[candidate.name]:
            row["onnx_latency_ms"] = {}
            for batch, seconds in onnx_latency[candidate.name].items():
                summary = _summary(seconds)
                summary["per_image"] = summary["median"] / batch
                row["onnx_latency_ms"][str(batch)] = summary
        if train_seconds:
            row["train"] = {}
            for mode, seconds in train_seconds[candidate.name].items():
                summary = _summary(seconds)
                row["train"][mode] = {
                    "step_ms": summary,
                    "images_per_s": train_batch / (summary["median"] / 1000),
                }
            first = row["train"][_mode_name(*train_modes[0])]
            for entry in row["train"].values():
                entry["speedup"] = first["step_ms"]["median"] / entry["step_ms"]["median"]
            row["train_step_ms"] = first["step_ms"]
            row["train_images_per_s"] = first["images_per_s"]
        if candidate.name in memory_mb:
            row["memory_mb"] = memory_mb[candidate.name]
        rows.append(row)
    _add_ratios(rows)
    machine = _machine(torch_device, threads, peak)
    machine["load_average"] = {"before": load_before, "after": _load_average()}
    return {
        "machine": machine,
        "settings": {
            "size": list(size),
            "batches": list(batches),
            "repeats": repeats,
            "warmup": warmup,
            "train_batch": train_batch if training else 0,
            "train_steps": train_steps if training else 0,
            "onnx": onnx,
            "onnx_exporter": onnx_exporter if onnx else None,
            "channels_last": channels_last,
            "train_modes": [_mode_name(*mode) for mode in train_modes] if training else [],
            "memory": (
                "peak RSS (ru_maxrss, reset per phase) delta, one subprocess per model"
                if torch_device.type == "cpu"
                else "torch.cuda.max_memory_allocated"
            )
            if memory
            else None,
        },
        "rows": rows,
    }


def _mode_name(precision: str, channels_last: bool) -> str:
    return f"{precision}+channels_last" if channels_last else precision


def _train_round_robin(
    candidates: list[Candidate],
    modes: list[tuple[str, bool]],
    batch: int,
    size,
    device: torch.device,
    classes: int,
    steps: int,
    sync,
) -> dict[str, dict[str, list[float]]]:
    """Seconds of ``steps`` training steps per candidate and (precision, channels-last) mode,
    timed round-robin after one untimed step each. A layout the model is not in gets its
    own copy of the model (and optimiser)."""
    images, labels = _inputs(batch, size, device, classes)
    runners = []
    for candidate in candidates:
        loss_args = _loss_args(candidate.spec)
        copies: dict[bool, tuple[nn.Module, torch.optim.Optimizer]] = {}
        for precision, layout in modes:
            if layout not in copies:
                model = copy.deepcopy(candidate.model).train()
                model.to(memory_format=torch.channels_last if layout else torch.contiguous_format)
                copies[layout] = (model, _optimizer(model))
            model, optimizer = copies[layout]
            inputs = images.contiguous(
                memory_format=torch.channels_last if layout else torch.contiguous_format
            )
            dtype = inference_dtype(precision, device)

            def step(
                model=model, optimizer=optimizer, inputs=inputs, dtype=dtype, loss_args=loss_args
            ) -> None:
                _train_step(model, optimizer, inputs, labels, loss_args, dtype)

            runners.append((f"{candidate.name}|{_mode_name(precision, layout)}", step))
    samples = _round_robin(runners, 1, steps, sync)
    result: dict[str, dict[str, list[float]]] = {c.name: {} for c in candidates}
    for key, seconds in samples.items():
        name, mode = key.split("|")
        result[name][mode] = seconds
    return result


def _torch_runner(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(images)

    return run


def _onnx_runner(session, array) -> Callable[[], None]:
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: array})


def _onnx_sessions(
    candidates: list[Candidate], size, threads: int, exporter: str, say
) -> dict[str, object]:
    import onnxruntime as ort

    from clipfuse.inference.export import export_onnx

    sessions = {}
    folder = Path(tempfile.mkdtemp(prefix="clipfuse-bench-"))
    for candidate in candidates:
        say(f"ONNX export of {candidate.name} ({exporter})")
        path = folder / f"{candidate.name}.onnx"
        with _quiet():
            export_onnx(candidate.model, path, size, exporter=exporter)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle onnxruntime threads spin by default and would slow the PyTorch call timed next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[candidate.name] = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    return sessions


def _load_average() -> float | None:
    """The 1-minute load average: other processes running during a CPU benchmark show here."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(device: torch.device, threads: int, peak: dict) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "device": str(device),
        "name": name,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "matmul_gflops": peak["gflops"],
        "matmul_n": peak["n"],
    }


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def _add_ratios(rows: list[dict]) -> None:
    """``row["ratios"]``: each figure divided by the first row's (higher = more of it)."""
    first = rows[0]

    def figures(row: dict) -> dict[str, float | None]:
        out: dict[str, float | None] = {"gmacs": row["gmacs"], "params": row["params_m"]}
        for batch, summary in row["latency_ms"].items():
            out[f"latency_b{batch}"] = summary["median"]
        for batch, summary in row.get("onnx_latency_ms", {}).items():
            out[f"onnx_latency_b{batch}"] = summary["median"]
        if "train_images_per_s" in row:
            out["train_throughput"] = row["train_images_per_s"]
        for key in ("weights", "inference", "train"):
            if key in row.get("memory_mb", {}):
                out[f"memory_{key}"] = row["memory_mb"][key]
        return out

    reference = figures(first)
    for row in rows:
        row["ratios"] = {
            key: _ratio(value, reference.get(key)) for key, value in figures(row).items()
        }


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_bench(result: dict) -> str:
    """Two plain-text tables: cost and latency; throughput, memory and efficiency."""
    machine, settings, rows = result["machine"], result["settings"], result["rows"]
    height, width = settings["size"]
    lines = [
        f"clipfuse bench: {height}x{width}, {machine['threads']} threads, {machine['device']} "
        f"({machine['name']}), torch {machine['torch']}",
        f"latency: median over {settings['repeats']} calls after {settings['warmup']} warm-up, "
        "round-robin, per image for batches > 1; +- is the inter-quartile range; "
        "x = ratio to the first row",
        f"matmul peak: {machine['matmul_gflops']:.1f} GFLOP/s (fp32 {machine['matmul_n']}^2)",
    ]
    load = machine.get("load_average") or {}
    if load.get("before") is not None:
        lines.append(
            f"load average (1 min) before / after: {load['before']:.2f} / {load['after']:.2f} "
            f"on {machine['cpu_count']} CPUs (other processes make CPU timings noisy)"
        )
    lines.append("")
    name_width = max(12, *(len(r["name"]) for r in rows)) + 2
    batches = [str(b) for b in settings["batches"]]
    header = f"{'model':<{name_width}}{'GMACs':>8}{'x':>6}{'params M':>10}{'x':>6}"

    def label(batch: str, prefix: str = "") -> str:
        return f"{prefix}b{batch} ms" + ("/img" if batch != "1" else "")

    for batch in batches:
        header += f"{label(batch):>13}{'+-':>7}{'x':>6}"
    if settings["onnx"]:
        for batch in batches:
            header += f"{label(batch, 'ort '):>16}{'x':>6}"
    lines.append(header)
    for row in rows:
        ratios = row["ratios"]
        line = (
            f"{row['name']:<{name_width}}{row['gmacs']:>8.2f}{ratios['gmacs']:>6.2f}"
            f"{row['params_m']:>10.2f}{ratios['params']:>6.2f}"
        )
        for batch in batches:
            summary = row["latency_ms"][batch]
            line += (
                f"{summary['median'] / int(batch):>13.1f}{summary['iqr'] / int(batch):>7.1f}"
                f"{ratios[f'latency_b{batch}']:>6.2f}"
            )
        if settings["onnx"]:
            for batch in batches:
                summary = row.get("onnx_latency_ms", {}).get(batch)
                line += _fmt(summary and summary["median"] / int(batch), ".1f", 16)
                line += _fmt(ratios.get(f"onnx_latency_b{batch}"), ".2f", 6)
        lines.append(line)

    lines.append("")
    header = f"{'model':<{name_width}}"
    if settings["train_batch"]:
        train_label = f"train img/s (b{settings['train_batch']})"
        header += f"{train_label:>20}{'x':>6}"
    if settings["memory"]:
        header += f"{'weights MB':>11}{f'infer MB b{batches[-1]}':>15}{'x':>6}"
        if settings["train_batch"]:
            header += f"{'train MB':>10}{'x':>6}"
    for batch in batches:
        header += f"{f'GFLOP/s b{batch}':>13}{'% peak':>8}"
    lines.append(header)
    for row in rows:
        ratios = row["ratios"]
        line = f"{row['name']:<{name_width}}"
        if settings["train_batch"]:
            line += f"{row['train_images_per_s']:>20.2f}{ratios['train_throughput']:>6.2f}"
        if settings["memory"]:
            memory = row["memory_mb"]
            line += (
                f"{memory['weights']:>11.0f}{memory['inference']:>15.0f}"
                f"{_fmt(ratios.get('memory_inference'), '.2f', 6)}"
            )
            if settings["train_batch"]:
                line += f"{memory['train']:>10.0f}{_fmt(ratios.get('memory_train'), '.2f', 6)}"
        for batch in batches:
            line += (
                f"{row['achieved_gflops'][batch]:>13.1f}{100 * row['peak_fraction'][batch]:>8.1f}"
            )
        lines.append(line)
    modes = settings.get("train_modes", [])
    if len(modes) > 1:
        lines += ["", _format_train_modes(rows, modes, settings, name_width)]
    return "\n".join(lines)


def _format_train_modes(rows: list[dict], modes: list[str], settings: dict, width: int) -> str:
    """Training step time per precision / memory layout; x = speed-up over the first."""
    lines = [
        f"training step, batch {settings['train_batch']}: median ms of {settings['train_steps']} "
        f"steps after 1 warm-up, interleaved; x = speed-up over {modes[0]}"
    ]
    header = f"{'model':<{width}}"
    for mode in modes:
        header += f"{mode + ' ms':>{max(12, len(mode) + 5)}}{'x':>6}"
    lines.append(header)
    for row in rows:
        line = f"{row['name']:<{width}}"
        for mode in modes:
            entry = row["train"][mode]
            line += f"{entry['step_ms']['median']:>{max(12, len(mode) + 5)}.0f}"
            line += f"{entry['speedup']:>6.2f}"
        lines.append(line)
    return "\n".join(lines)
