"""Which precision and memory layout compute fastest on this CPU: measured once, then cached.

CPU flags do not say it: a CPU that lists AVX512-BF16 without AMX can run bf16 convolutions
slower than fp32, and a CPU without native bf16 runs them many times slower; channels-last
helps some oneDNN kernels and slows others. So ``auto`` precision and layout on a CPU
(:mod:`clipfuse.precision`) come from a short probe of the operations that dominate these
models, each in the four settings (fp32 / bf16 autocast x contiguous / channels-last):

* a 3x3 convolution of the decoder's width at a quarter of a crop (the Semantic FPN, most of
  the GMACs), a depthwise 3x3 and a 1x1 convolution (MobileNetV2's blocks) and a linear layer
  over tokens (the text head, the Conv-Former's attention);
* for training, forward and backward (what a step runs); for inference, the forward under
  ``torch.inference_mode``.

The settings are timed in interleaved rounds (the fastest call of each counts: other work only
ever slows a call). The first call of each setting builds oneDNN's kernels and is not timed
(counted, a slow first call could drop the fastest setting); a setting more than
:data:`DROP_FACTOR` x slower than the best after its first timed call is dropped, so an
emulated bf16 costs two calls, not a probe. A departure from fp32
contiguous (bf16, channels-last) is chosen only where it is at least :data:`MARGIN` x faster
for each departure it makes. The verdict is cached per CPU model, torch version and thread
count in ``<cache>/cpu-probe/`` (one JSON file per key, written atomically); a file that is
unreadable, malformed, or made for another key is measured again and replaced.
"""

import hashlib
import json
import platform
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from clipfuse.errors import ClipfuseError, announce
from clipfuse.fileio import atomic_write_text
from clipfuse.paths import cache_dir

Purpose = Literal["train", "inference"]
FP32, BF16 = "32-true", "bf16-mixed"
SETTINGS = ((FP32, False), (FP32, True), (BF16, False), (BF16, True))
ROUNDS = 5  # timed rounds after the first, untimed one
BUDGET_SECONDS = 2.0  # stop timing after this long, whatever the rounds
DROP_FACTOR = 2.0
MARGIN = 1.05
PROBE_FORMAT = 2  # 2: first calls untimed (format 1's verdicts could count a kernel build)


def setting_name(precision: str, channels_last: bool) -> str:
    """``fp32``, ``fp32-cl``, ``bf16``, ``bf16-cl``: a setting as the announcements name it."""
    return ("bf16" if precision == BF16 else "fp32") + ("-cl" if channels_last else "")


class Verdict(BaseModel):
    """The fastest setting for one purpose and the probe's best milliseconds of each setting."""

    precision: Literal["32-true", "bf16-mixed"]
    channels_last: bool
    ms: dict[str, float]

    def speedups(self) -> str:
        """Each setting's speed relative to fp32 contiguous, e.g. ``bf16 0.31x, fp32-cl 1.08x``."""
        base = self.ms["fp32"]
        return ", ".join(
            f"{name} {base / ms:.2f}x" for name, ms in self.ms.items() if name != "fp32"
        )

    def fastest_layout(self, precision: str) -> bool:
        """Whether channels-last is the faster layout for ``precision`` (within :data:`MARGIN`)."""
        name = setting_name(precision, False)
        return self.ms[name] > MARGIN * self.ms[f"{name}-cl"]


class ProbeEntry(BaseModel):
    """One cache file: the key it was measured for, and a verdict per purpose."""

    format: Literal[2]
    key: str
    train: Verdict | None = None
    inference: Verdict | None = None


def _probe_ops() -> tuple[list[nn.Module], list[torch.Tensor]]:
    """The probe's layers and inputs (random, from a private generator)."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = [
            nn.Conv2d(128, 128, 3, padding=1),
            nn.Conv2d(96, 96, 3, padding=1, groups=96),
            nn.Conv2d(96, 128, 1),
            nn.Linear(256, 256),
        ]
    shapes = [(1, 128, 32, 48), (1, 96, 32, 48), (1, 96, 32, 48), (1, 768, 256)]
    return layers, [torch.randn(shape, generator=generator) for shape in shapes]


def _runner(purpose: Purpose, precision: str, channels_last: bool) -> Callable[[], None]:
    """One call of the probe in one setting."""
    layers, inputs = _probe_ops()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    inputs = [x.contiguous(memory_format=layout) if x.dim() == 4 else x for x in inputs]
    for layer in layers:
        layer.to(memory_format=layout)
    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == BF16)

    def call() -> None:
        if purpose == "inference":
            with torch.inference_mode(), torch.autocast(**autocast):
                for layer, x in zip(layers, inputs, strict=True):
                    layer(x)
            return
        with torch.autocast(**autocast):
            loss = sum(layer(x).float().mean() for layer, x in zip(layers, inputs, strict=True))
        loss.backward()

    return call


def measure(purpose: Purpose) -> Verdict:
    """Time the probe in every setting on this CPU now (about a second or two)."""
    runners = {setting: _runner(purpose, *setting) for setting in SETTINGS}
    best: dict[tuple[str, bool], float] = {}
    start = time.perf_counter()
    for round_ in range(ROUNDS + 1):
        for setting, call in runners.items():
            # dropped after its first timed call: it cannot win
            if setting in best and best[setting] > DROP_FACTOR * min(best.values()):
                continue
            began = time.perf_counter()
            call()
            seconds = time.perf_counter() - began
            if round_ > 0:  # the first call builds oneDNN's kernels: a warm-up, not a timing
                best[setting] = min(best.get(setting, seconds), seconds)
        if time.perf_counter() - start > BUDGET_SECONDS and round_ >= 1:
            break
    ms = {setting_name(*setting): round(1000 * best[setting], 3) for setting in SETTINGS}

    def cost(setting: tuple[str, bool]) -> float:
        departures = (setting[0] != FP32) + setting[1]
        return best[setting] * MARGIN**departures

    precision, channels_last = min(SETTINGS, key=cost)
    return Verdict(precision=precision, channels_last=channels_last, ms=ms)


def cpu_name() -> str:
    """This CPU's model name (``/proc/cpuinfo``; elsewhere the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_key() -> str:
    """What a verdict holds for: the CPU model and its vector ISA, torch's version, threads."""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{cpu_name()} ({capability}) | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cache_path(key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "cpu-probe" / f"{digest}.json"


def _read(path: Path, key: str) -> ProbeEntry | None:
    """The cache file's entry if it is readable, well formed and made for ``key``."""
    try:
        entry = ProbeEntry.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None
    return entry if entry.key == key else None


@cache
def _verdict(purpose: Purpose, key: str) -> tuple[Verdict, str]:
    path = cache_path(key)
    entry = _read(path, key) or ProbeEntry(format=PROBE_FORMAT, key=key)
    verdict = getattr(entry, purpose)
    if verdict is not None:
        return verdict, f"measured on this CPU earlier, cached in {path}"
    verdict = measure(purpose)
    entry = entry.model_copy(update={purpose: verdict})
    try:
        atomic_write_text(path, json.dumps(entry.model_dump(), indent=2) + "\n")
        where = f"cached in {path}"
    except ClipfuseError as error:  # a cache that cannot be written costs a probe, no more
        where = f"not cached: {error}"
    source = f"measured on this CPU now, {where}"
    if purpose == "inference":  # training announces its choice itself, at every run
        layout = "channels-last" if verdict.channels_last else "contiguous"
        announce(
            f"`auto` inference on this CPU: {setting_name(verdict.precision, False)} with "
            f"{layout} tensors (speed against fp32 contiguous: {verdict.speedups()}; {source})"
        )
    return verdict, source


def cpu_verdict(purpose: Purpose) -> tuple[Verdict, str]:
    """The fastest setting on this CPU for ``purpose`` at torch's current thread count, and
    where it came from (measured now or read from the cache); measured once per process and
    key at most."""
    return _verdict(purpose, probe_key())
