"""Per-part profile of the training step (``clipfuse bench --train-profile``).

For each model and training mode (precision x channels-last) that bench times, the step of
:func:`clipfuse.research.bench.timing.train_step` (the engine's loss, autocast and memory layout, on
its own copy of the model as bench's training timings) is cut into parts by reading the clock,
after synchronising the device, at the end of each:

* ``backbone``: the backbone's forward, ended by a forward hook on ``model.backbone`` (a
  :class:`~clipfuse.models.Segmentor`) or ``model.encoder`` (segmentation_models_pytorch);
  the model runs its own ``forward``, unchanged;
* ``head+decoder``: the rest of the forward (language head, decoder, classifier, upsampling;
  ``forward`` for a model with neither attribute);
* ``loss``: :func:`clipfuse.losses.segmentation_loss`; ``backward``;
* ``optimizer``: ``zero_grad`` (at the start of the step) and the SGD step.

Times are medians over ``train_steps`` steps after one untimed step, the models and modes
interleaved round-robin as in bench's training timings, and their share of the median profiled
step (the whole call). Synchronising at each part's end keeps a CUDA device from running a part
while the CPU queues the next, so a profiled step can be slower than bench's unprofiled one,
shown beside it. FLOPs: one more step of each model and mode under
:func:`clipfuse.analysis.flops.flop_counter` (grouped convolutions' weight gradients counted
once), read at the same ends of parts. It counts convolutions, matrix products and attention
only: norms, activations, the loss's soft-max and cross-entropy and the optimiser's element-wise
update count 0 (their GFLOP/s is not shown). GFLOP/s is a part's FLOPs over its median time, and
``% peak`` its fraction of the matmul peak in the mode's compute dtype: bench's fp32 peak for
``32-true``, the bf16 (``bf16-mixed``) or fp16 (``16-mixed``) peak measured the same way (best
``n x n`` product before and after the profiled steps) for autocast modes.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from clipfuse.analysis.flops import flop_counter
from clipfuse.precision import inference_dtype
from clipfuse.research.bench.bench_rows import mode_name
from clipfuse.research.bench.candidates import Candidate, candidate_mode_steps
from clipfuse.research.bench.timing import (
    matmul_peak,
    random_batch,
    summarize_ms,
    synchronizer,
)

PARTS = ("backbone", "head_decoder", "forward", "loss", "backward", "optimizer")
LABELS = {"head_decoder": "head+decoder"}


class PartMeter:
    """Per call, how much of a quantity (``read()``: seconds, FLOPs) each part of the step
    took: at each mark of :func:`~clipfuse.research.bench.timing.train_step`, ``read()`` minus its
    value at the mark before (at :meth:`start` for the first)."""

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read
        self.calls: list[dict[str, float]] = []
        self.last = 0.0

    def start(self) -> None:
        self.calls.append({})
        self.last = self.read()

    def mark(self, end: str) -> None:
        """Close the part that ``end`` ends: ``zero_grad`` and ``step`` both count as the
        optimiser's, ``forward`` after a ``backbone`` mark as the head and decoder's."""
        now = self.read()
        parts = self.calls[-1]
        part = {"zero_grad": "optimizer", "step": "optimizer"}.get(end, end)
        if part == "forward" and "backbone" in parts:
            part = "head_decoder"
        parts[part] = parts.get(part, 0.0) + now - self.last
        self.last = now


def _clock(device: torch.device) -> Callable[[], float]:
    """``time.perf_counter()`` once the device's queued work is done."""
    sync = synchronizer(device)

    def read() -> float:
        sync()
        return time.perf_counter()

    return read


def _backbone_of(model: nn.Module) -> nn.Module | None:
    """The submodule whose forward is the backbone's: ``backbone``, else smp's ``encoder``."""
    for name in ("backbone", "encoder"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


@contextmanager
def backbone_marked(model: nn.Module, mark: Callable[[str], None]) -> Iterator[None]:
    """``mark("backbone")`` at the end of each forward of ``model``'s backbone, if it has one."""
    backbone = _backbone_of(model)

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        mark("backbone")

    handle = backbone.register_forward_hook(hook) if backbone is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def count_step_flops(model: nn.Module, step: Callable[..., None]) -> dict[str, float]:
    """FLOPs of each part of one ``step(mark=)`` of ``model``."""
    counter = flop_counter()
    meter = PartMeter(counter.get_total_flops)
    with counter, backbone_marked(model, meter.mark):
        meter.start()
        step(mark=meter.mark)
    return meter.calls[0]


def _profiled(model: nn.Module, step: Callable[..., None], meter: PartMeter) -> Callable[[], None]:
    """One ``step`` of ``model``, its parts timed by ``meter``."""

    def run() -> None:
        with backbone_marked(model, meter.mark):
            meter.start()
            step(mark=meter.mark)

    return run


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")


def measure_train_profile(
    candidates: list[Candidate],
    modes: list[tuple[str, bool]],
    batch: int,
    size,
    device: torch.device,
    classes: int,
    timer: Callable[[list], dict[str, list[float]]],
    say,
) -> dict:
    """Each candidate's and mode's FLOPs per part, and the seconds of its profiled steps and of
    their parts, timed together by ``timer`` (round-robin); the matmul peak of each autocast
    dtype of ``modes`` (best of before and after)."""
    say(f"training profile, batch {batch}")
    images, labels = random_batch(batch, size, device, classes)
    dtypes = {inference_dtype(precision, device) for precision, _ in modes} - {None}
    peaks = {dtype: [matmul_peak(device, dtype=dtype)] for dtype in dtypes}
    models: dict[str, dict[str, dict]] = {c.name: {} for c in candidates}
    runners, meters = [], {}
    for candidate, mode, model, step in candidate_mode_steps(candidates, modes, images, labels):
        key = f"{candidate.name}|{mode_name(*mode)}"
        meters[key] = PartMeter(_clock(device))
        models[candidate.name][mode_name(*mode)] = {
            "dtype": _dtype_name(inference_dtype(mode[0], device)),
            "flops": count_step_flops(model, step),
        }
        runners.append((key, _profiled(model, step, meters[key])))
    seconds = timer(runners)
    for dtype in dtypes:
        peaks[dtype].append(matmul_peak(device, dtype=dtype))
    for key, meter in meters.items():
        name, mode = key.split("|")
        steps = seconds[key]
        models[name][mode].update(step_s=steps, parts_s=meter.calls[-len(steps) :])
    best = {_dtype_name(d): max(p, key=lambda peak: peak["gflops"]) for d, p in peaks.items()}
    return {"matmul_peak": best, "models": models}


def _rates(gflop: float, ms: float, peak_gflops: float) -> dict:
    """GFLOP, the GFLOP/s it ran at in ``ms`` and its fraction of the peak (None for 0 FLOPs)."""
    gflops = gflop / (ms / 1000) if gflop and ms else None
    peak_fraction = gflops / peak_gflops if gflops else None
    return {"gflop": gflop, "gflops": gflops, "peak_fraction": peak_fraction}


def _mode_figures(measured: dict, peak_gflops: float) -> dict:
    """A model's profile in one mode: the step's and each part's ms, share of the step,
    GFLOP, GFLOP/s and fraction of the peak."""
    step = summarize_ms(measured["step_s"])
    parts = {}
    for part in PARTS:
        if part in measured["parts_s"][0]:
            summary = summarize_ms([call[part] for call in measured["parts_s"]])
            gflop = measured["flops"].get(part, 0) / 1e9
            parts[part] = {
                "ms": summary,
                "share": summary["median"] / step["median"],
                **_rates(gflop, summary["median"], peak_gflops),
            }
    gflop = sum(part["gflop"] for part in parts.values())
    return {
        "dtype": measured["dtype"],
        "step_ms": step,
        "parts_ms_sum": sum(part["ms"]["median"] for part in parts.values()),
        **_rates(gflop, step["median"], peak_gflops),
        "parts": parts,
    }


def train_profile_figures(measured: dict, fp32_peak: dict, train: dict[str, dict]) -> dict:
    """The JSON of :func:`measure_train_profile`'s measurements: matmul peaks by dtype, and
    per model and mode the step's and each part's figures, with bench's unprofiled step
    (``train``: :func:`~clipfuse.research.bench.bench_rows.train_figures` per model)."""
    peaks = {"float32": fp32_peak, **measured["matmul_peak"]}
    models: dict[str, dict[str, dict]] = {}
    for name, by_mode in measured["models"].items():
        models[name] = {}
        for mode, raw in by_mode.items():
            entry = _mode_figures(raw, peaks[raw["dtype"]]["gflops"])
            entry["unprofiled_step_ms"] = train[name]["train"][mode]["step_ms"]["median"]
            models[name][mode] = entry
    return {"matmul_peak": peaks, "models": models}


def _figures_line(label: str, ms: float, share: float, figures: dict) -> str:
    """A part's (or the step's) line after the model and mode: ``figures`` from :func:`_rates`."""
    line = f"{label:<14}{ms:>10.1f}{100 * share:>8.1f}{figures['gflop']:>10.3f}"
    if figures["gflops"] is None:
        return line + f"{'-':>10}{'-':>8}"
    return line + f"{figures['gflops']:>10.1f}{100 * figures['peak_fraction']:>8.1f}"


def format_train_profile(profile: dict, settings: dict, name_width: int) -> str:
    """The table of :func:`train_profile_figures`: one line per part of each model and mode,
    then the whole step's."""
    peaks = ", ".join(
        f"{dtype} {peak['gflops']:.1f}" for dtype, peak in profile["matmul_peak"].items()
    )
    lines = [
        f"training step by part, batch {settings['train_batch']}: median ms of "
        f"{settings['train_steps']} steps after 1 warm-up, interleaved, the device synchronised "
        "at each part's end; % = share of the profiled step",
        "GFLOP: FlopCounterMode (convolutions, matrix products, attention); % peak: of the "
        f"matmul peak in the mode's dtype ({peaks} GFLOP/s)",
        "step: the profiled step, its % the parts' summed; unprofiled: bench's step above",
    ]
    modes = {mode for by_mode in profile["models"].values() for mode in by_mode}
    mode_width = max(len(mode) for mode in modes) + 2
    lines.append(
        f"{'model':<{name_width}}{'mode':<{mode_width}}{'part':<14}{'ms':>10}{'%':>8}"
        f"{'GFLOP':>10}{'GFLOP/s':>10}{'% peak':>8}"
    )
    for name, by_mode in profile["models"].items():
        for mode, entry in by_mode.items():
            head = f"{name:<{name_width}}{mode:<{mode_width}}"
            for part, figures in entry["parts"].items():
                label = LABELS.get(part, part)
                lines.append(
                    head + _figures_line(label, figures["ms"]["median"], figures["share"], figures)
                )
                head = " " * (name_width + mode_width)
            step_ms = entry["step_ms"]["median"]
            step = _figures_line("step", step_ms, entry["parts_ms_sum"] / step_ms, entry)
            lines.append(f"{head}{step}   unprofiled {entry['unprofiled_step_ms']:.1f} ms")
    return "\n".join(lines)
