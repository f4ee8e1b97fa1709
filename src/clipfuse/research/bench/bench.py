"""Side-by-side speed benchmark of configs' models in one process (``clipfuse bench``).

For each model (random weights: speed does not depend on them) it measures, at one input size
(default: the first config's :func:`~clipfuse.analysis.evaluation_size`) and thread count:

* inference latency at each batch size: ``eval()``, ``torch.inference_mode()``, ``warmup``
  untimed calls, then ``repeats`` timed calls; median, inter-quartile range and std (ms);
* optionally the same for other inference paths (bf16 autocast, channels-last, the ONNX export
  run by onnxruntime in fp32 and int8): :mod:`clipfuse.research.bench.paths`;
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
  (``2 x GMACs x batch / median latency``) as a fraction of it;
* training throughput in every combination of ``train_precisions`` (``32-true``,
  ``bf16-mixed``, ``16-mixed``) and ``train_channels_last`` (default: ``[channels_last]``),
  interleaved, ``x`` comparing each with the first;
* optionally (``parts``) the inference latency by part on those paths:
  :mod:`clipfuse.research.bench.parts`;
* optionally (``train_profile``) the training step by part:
  :mod:`clipfuse.research.bench.train_profile`.

Timing: :mod:`clipfuse.research.bench.timing`; memory: :mod:`clipfuse.research.bench.memory`; the rows:
:mod:`clipfuse.research.bench.bench_rows`; the tables: :mod:`clipfuse.research.bench.bench_table`. Timed
calls are interleaved round-robin (one call of each model in turn, the starting model rotating
every round), so slow drifts of the machine (other jobs, clocks, heat) spread over all models
instead of biasing the ones timed last. Ratios are to the first model.
"""

import itertools
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch

from clipfuse.errors import ClipfuseError
from clipfuse.inference.predict import resolve_device
from clipfuse.precision import (
    inference_channels_last,
    inference_dtype,
    inference_path_name,
    resolve_precision,
)
from clipfuse.research.bench.bench_rows import (
    mode_name,
    result_rows,
    train_figures,
)
from clipfuse.research.bench.bench_table import add_ratios, format_bench
from clipfuse.research.bench.candidates import (
    Candidate,
    candidate_mode_steps,
    create_from_spec,
    load_candidates,
)
from clipfuse.research.bench.memory import memory_cpu, memory_cuda
from clipfuse.research.bench.parts import measure_parts, parts_figures
from clipfuse.research.bench.paths import (
    REFERENCE,
    add_path_figures,
    checked_paths,
    measure_paths,
)
from clipfuse.research.bench.timing import (
    machine_info,
    matmul_peak,
    random_batch,
    round_robin,
    synchronizer,
)
from clipfuse.research.bench.train_profile import measure_train_profile, train_profile_figures
from clipfuse.threads import load_average

DEFAULT_BATCHES = (1, 4)
__all__ = ["bench", "format_bench"]


def bench(
    configs: Sequence[str | Path | dict],
    size: Sequence[int] | None = None,
    batches: Sequence[int] = DEFAULT_BATCHES,
    threads: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    train_batch: int = 2,
    train_steps: int = 3,
    paths: Sequence[str] = (),
    onnx_exporter: str = "torchscript",
    smp_reference: bool = False,
    memory: bool = True,
    channels_last: bool = False,
    train_precisions: Sequence[str] = ("32-true",),
    train_channels_last: Sequence[bool] | None = None,
    train_profile: bool = False,
    parts: bool = False,
    device: str = "auto",
    overrides: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Benchmark the models of ``configs`` (YAML paths or config dicts) side by side; returns
    the JSON-able result of :func:`format_bench`, each option as the module says:
    ``train_batch=0`` or ``train_steps=0`` skips training, ``memory=False`` memory;
    ``overrides`` apply to every config file; ``parts`` alone times the eager-fp32 path."""
    say = progress or (lambda message: None)
    batches, torch_device = _checked_settings(
        batches, repeats, warmup, train_batch, train_steps, device, train_profile
    )
    paths = checked_paths(paths or ((REFERENCE,) if parts else ()), torch_device)
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    if train_batch == 0 or train_steps == 0:
        train_batch = train_steps = 0  # no training
    layouts = [channels_last] if train_channels_last is None else train_channels_last
    train_modes = list(itertools.product(train_precisions, layouts))
    load_before = load_average()
    candidates = load_candidates(configs, smp_reference, overrides)
    size = _build_models(candidates, size, torch_device, channels_last, say)
    classes = max(c.info["num_classes"] for c in candidates)
    job = {"size": list(size), "batch": batches[-1], "train_batch": train_batch}
    job.update(classes=classes, threads=threads)
    memory_mb = _peak_memory(candidates, job, torch_device, say) if memory else {}
    say("matmul peak")
    peaks = [matmul_peak(torch_device)]
    timer = partial(round_robin, warmup=warmup, repeats=repeats, sync=synchronizer(torch_device))
    latency, samples, path_peaks = measure_paths(
        candidates, paths, batches, job, torch_device, channels_last, onnx_exporter, timer, say
    )
    part_samples = {}
    if parts:
        part_samples = measure_parts(
            candidates, paths, job, torch_device, channels_last, timer, say
        )
    train_seconds, profile = _train_timings(
        candidates, train_modes, job, train_steps, torch_device, train_profile, say
    )
    peaks.append(matmul_peak(torch_device))  # before and after: the best of both
    peak = max(peaks, key=lambda p: p["gflops"])
    train = {name: train_figures(t, train_modes, train_batch) for name, t in train_seconds.items()}
    rows = result_rows(candidates, latency, train, memory_mb, peak["gflops"])
    add_ratios(rows)
    machine = machine_info(torch_device, threads, peak)
    machine.update(load_average={"before": load_before, "after": load_average()})
    machine.update(auto=_auto_choice(torch_device))
    add_path_figures(rows, machine, samples, paths, path_peaks)
    settings = dict(size=list(size), batches=list(batches), repeats=repeats, warmup=warmup)
    settings.update(train_batch=train_batch, train_steps=train_steps, paths=list(paths))
    ort = any(path.startswith("ort-") for path in paths)
    settings.update(onnx_exporter=onnx_exporter if ort else None, channels_last=channels_last)
    settings["train_modes"] = [mode_name(*mode) for mode in train_modes] if train_batch else []
    settings["memory"] = _memory_method(torch_device) if memory else None
    result = {"machine": machine, "settings": settings, "rows": rows}
    if parts:
        result["parts"] = parts_figures(part_samples, candidates, rows, machine["peaks"])
    if profile:
        result["train_profile"] = train_profile_figures(profile, peak, train)
    return result


def _auto_choice(device: torch.device) -> dict[str, str]:
    """What ``auto`` precision and layout choose on this device at this thread count: the
    training mode (with the note that announces it) and the inference path."""
    precision, channels_last, note = resolve_precision("auto", "auto", device.type)
    path = inference_path_name(
        inference_dtype("auto", device), inference_channels_last("auto", device)
    )
    return {
        "train": mode_name(precision, channels_last),
        "train_note": note,
        "inference_path": path,
    }


def _checked_settings(
    batches: Sequence[int],
    repeats: int,
    warmup: int,
    train_batch: int,
    train_steps: int,
    device: str,
    train_profile: bool,
) -> tuple[tuple[int, ...], torch.device]:
    """The sorted batch sizes as ints, and the device; refuses counts and devices the
    benchmark cannot run with."""
    batches = tuple(sorted({int(b) for b in batches}))
    if not batches or batches[0] < 1:
        raise ClipfuseError(f"bench: batch sizes must be positive, got {batches}")
    if repeats < 1 or warmup < 0 or train_batch < 0 or train_steps < 0:
        raise ClipfuseError("bench: repeats must be >= 1 and warmup, train sizes >= 0")
    if train_profile and not (train_batch and train_steps):
        raise ClipfuseError("bench: --train-profile needs training: --train-batch/-steps above 0")
    return batches, resolve_device(device)


def _checked_size(size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 32:
        raise ClipfuseError(f"bench: size must be H W of at least 32, got {size}")
    return size


def _build_models(
    candidates: list[Candidate], size, device: torch.device, channels_last: bool, say
) -> tuple[int, ...]:
    """Each candidate's model (seeded random weights, eval mode, on ``device``) and its
    GMACs and parameters at one image of ``size`` (None: the first config's evaluation size),
    in ``candidate.info``; returns the size."""
    from clipfuse.analysis import count_macs, evaluation_size, segmentor_cost
    from clipfuse.models import Segmentor

    size = _checked_size(size or evaluation_size(candidates[0].spec["config"]))

    torch.manual_seed(0)
    for candidate in candidates:
        say(f"building {candidate.name}")
        model, info = create_from_spec(candidate.spec)
        model.eval()
        if isinstance(model, Segmentor):
            cost = segmentor_cost(model, *size)
        else:
            cost = count_macs(model, (1, 3, *size))
        candidate.info = {**info, **cost}
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        candidate.model = model
    return size


def _peak_memory(candidates: list[Candidate], job: dict, device: torch.device, say) -> dict:
    """Peak memory (MB) of each candidate: in a subprocess on CPU, in this process on CUDA."""
    memory_mb: dict[str, dict] = {}
    for candidate in candidates:
        say(f"memory of {candidate.name}")
        if device.type == "cuda":
            memory_mb[candidate.name] = memory_cuda(candidate.model, job, device)
        else:
            memory_mb[candidate.name] = memory_cpu(candidate, job)
    return memory_mb


def _memory_method(device: torch.device) -> str:
    if device.type == "cpu":
        return "peak RSS (ru_maxrss, reset per phase) delta, one subprocess per model"
    return "torch.cuda.max_memory_allocated"


def _train_timings(
    candidates: list[Candidate],
    modes: list[tuple[str, bool]],
    job: dict,
    steps: int,
    device: torch.device,
    profile: bool,
    say,
) -> tuple[dict[str, dict[str, list[float]]], dict | None]:
    """Seconds of the timed training steps (:func:`_train_round_robin`, one untimed step
    first) and, with ``profile``, the measurements of the step by part
    (:func:`~clipfuse.research.bench.train_profile.measure_train_profile`); nothing without training."""
    if not job["train_batch"]:
        return {}, None
    timer = partial(round_robin, warmup=1, repeats=steps, sync=synchronizer(device))
    args = (candidates, modes, job["train_batch"], job["size"], device, job["classes"], timer, say)
    return _train_round_robin(*args), measure_train_profile(*args) if profile else None


def _train_round_robin(
    candidates: list[Candidate],
    modes: list[tuple[str, bool]],
    batch: int,
    size,
    device: torch.device,
    classes: int,
    timer: Callable[[list], dict[str, list[float]]],
    say,
) -> dict[str, dict[str, list[float]]]:
    """Seconds of each timed training step per candidate and (precision, channels-last) mode,
    all timed together by ``timer`` (round-robin). A layout the model is not in gets its
    own copy of the model (and optimiser); the candidates' models are left in eval mode."""
    say(f"training, batch {batch}, {len(modes)} precision / layout setting(s)")
    images, labels = random_batch(batch, size, device, classes)
    runners = [
        (f"{candidate.name}|{mode_name(*mode)}", step)
        for candidate, mode, _, step in candidate_mode_steps(candidates, modes, images, labels)
    ]
    samples = timer(runners)
    for candidate in candidates:
        candidate.model.eval()
    result: dict[str, dict[str, list[float]]] = {c.name: {} for c in candidates}
    for key, seconds in samples.items():
        name, mode = key.split("|")
        result[name][mode] = seconds
    return result
