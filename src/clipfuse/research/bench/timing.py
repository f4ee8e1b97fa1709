"""The timing core of ``clipfuse bench`` and of the experiment runner's latency: robust
statistics of repeated calls, interleaved round-robin, the machine's matmul peak, one training
step as the engine runs it, and what the machine was."""

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from clipfuse.cpu_probe import cpu_name
from clipfuse.losses import segmentation_loss
from clipfuse.precision import AutocastWeights, inference_dtype
from clipfuse.threads import usable_cores


def summarize_ms(seconds: Sequence[float]) -> dict:
    """Median, inter-quartile range, std, min and the sorted samples, in milliseconds."""
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


PEAK_SECONDS = 0.25  # the longest one product of a CPU matmul peak should take


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for the device's queued work before a clock is read (nothing on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def matmul_peak(
    device: torch.device,
    n: int | None = None,
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float | int]:
    """Best GFLOP/s of ``n x n @ n x n`` (2 n^3 FLOPs) in ``dtype`` over ``repeats`` after a
    warm-up; ``n`` by default 8192 on CUDA, on a CPU the largest power of two up to 2048 whose
    product takes at most :data:`PEAK_SECONDS` (a dtype the CPU emulates, such as bf16 without
    AVX512-BF16, runs tens of times slower: its peak is measured on a smaller matrix)."""
    n = n or (8192 if device.type == "cuda" else _cpu_peak_size(dtype))
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = synchronizer(device)
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


def _cpu_peak_size(dtype: torch.dtype, largest: int = 2048) -> int:
    """The largest ``n`` (a power of two, 256 to ``largest``) whose ``n x n`` product in
    ``dtype`` should take at most :data:`PEAK_SECONDS` on this CPU, from timing smaller ones."""
    n = 256
    with torch.inference_mode():
        while n < largest:
            a = torch.randn(n, n, dtype=dtype)
            torch.mm(a, a)  # warm-up
            start = time.perf_counter()
            torch.mm(a, a)
            if 8 * (time.perf_counter() - start) > PEAK_SECONDS:  # twice n: 8x the work
                break
            n *= 2
    return n


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_args: dict | None = None,
    dtype: torch.dtype | None = None,
    mark: Callable[[str], None] | None = None,
) -> None:
    """One step as the engine trains: forward (under autocast when ``dtype`` is given), the
    engine's loss with the config's loss keys (``loss_args``: ``candidate_loss_args``),
    backward, step. ``mark`` (a profiler's, :mod:`clipfuse.research.bench.train_profile`) is called
    with the name of each part as it ends: ``zero_grad``, ``forward``, ``loss``, ``backward``,
    ``step``."""
    mark = mark or (lambda part: None)
    optimizer.zero_grad(set_to_none=True)
    mark("zero_grad")
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        outputs = model(images)
        mark("forward")
        if not isinstance(outputs, dict):
            outputs = {"logits": outputs}
        loss = segmentation_loss(outputs, labels, **(loss_args or {}))["loss"]
        mark("loss")
    loss.backward()
    mark("backward")
    optimizer.step()
    mark("step")


def mode_steps(
    model: nn.Module,
    modes: Sequence[tuple[str, bool]],
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_args: dict,
) -> list[tuple[tuple[str, bool], nn.Module, Callable[..., None]]]:
    """``(mode, copy, step)`` per (precision, channels-last) mode: ``step(mark=None)`` is a
    :func:`train_step` of ``copy``, a train-mode copy of ``model`` in the mode's memory layout
    (one copy and SGD optimiser per layout, shared by its precisions), on ``images`` in that
    layout, under the precision's autocast dtype."""
    copies: dict[bool, tuple[nn.Module, torch.optim.Optimizer]] = {}
    steps = []
    for precision, layout in modes:
        memory_format = torch.channels_last if layout else torch.contiguous_format
        if layout not in copies:
            duplicate = copy.deepcopy(model).train().to(memory_format=memory_format)
            copies[layout] = (duplicate, sgd_optimizer(duplicate))
        duplicate, optimizer = copies[layout]
        inputs = images.contiguous(memory_format=memory_format)
        dtype = inference_dtype(precision, images.device)
        step = partial(train_step, duplicate, optimizer, inputs, labels, loss_args, dtype)
        steps.append(((precision, layout), duplicate, step))
    return steps


def sgd_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum on the trainable parameters: the optimiser state of a timed step."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(parameters, lr=1e-4, momentum=0.9)


def random_batch(
    batch: int, size: Sequence[int], device: torch.device, classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B x 3 x H x W) and labels (B x H x W) in ``[0, classes)``, seeded."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *size, generator=generator).to(device)
    labels = torch.randint(0, classes, (batch, *size), generator=generator).to(device)
    return images, labels


def round_robin(
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


def inference_runner(
    model: nn.Module,
    images: torch.Tensor | tuple[torch.Tensor, ...],
    dtype: torch.dtype | None = None,
) -> Callable[[], None]:
    """One forward pass of ``model`` on ``images`` (a tuple: its positional inputs) under
    ``torch.inference_mode()`` (and autocast to ``dtype`` where given, its weights cast once,
    as ``predict`` and ``eval`` run the model: :class:`clipfuse.precision.AutocastWeights`)."""
    weights = AutocastWeights(model, dtype)
    inputs = images if isinstance(images, tuple) else (images,)
    device_type = inputs[0].device.type

    def run() -> None:
        with weights.applied(), torch.inference_mode():
            with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                model(*inputs)

    return run


def machine_info(device: torch.device, threads: int, peak: dict) -> dict:
    """The device, its name, CPU count, the cores this process may use, threads, torch version
    and the matmul ``peak``."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": str(device),
        "name": name,
        "cpu_count": os.cpu_count(),
        "cores": usable_cores(),
        "threads": threads,
        "torch": torch.__version__,
        "matmul_gflops": peak["gflops"],
        "matmul_n": peak["n"],
    }
