"""Which precision and memory layout compute fastest on this CPU: measured once, then cached.

CPU flags do not say it: a CPU that lists AVX512-BF16 without AMX can run bf16 convolutions
slower than fp32, and a CPU without native bf16 runs them many times slower; channels-last
helps some oneDNN kernels and slows others. So ``auto`` precision and layout on a CPU
(:mod:`clipfuse.precision`) come from a short probe of the operations that dominate these
models, each in the four settings (fp32 / bf16 autocast x contiguous / channels-last):

* a miniature of these models, run as a whole so that what happens between layers is timed
  too (oneDNN's reorders between layouts, batch norm, bilinear resizing): MobileNetV2's stem
  and an inverted residual, a linear layer over tokens (the text head, the Conv-Former's
  attention), a Semantic FPN lateral 3x3 convolution at stride 4 with bilinear upsampling,
  and logits resized to the input;
* for training, forward, cross-entropy and backward at batch 2 (what a step runs); for
  inference, the forward under ``torch.inference_mode`` at batch 1. Single layers timed on
  separate tensors misranked the settings (docs/research/speed.md: channels-last's gain lies
  between the layers).

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
from torch.nn import functional as F

from clipfuse.decoders.common import ConvBNReLU
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
PROBE_FORMAT = 3  # 3: a miniature model (format 2 timed single layers, and misranked)


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

    format: Literal[PROBE_FORMAT]
    key: str
    train: Verdict | None = None
    inference: Verdict | None = None


class ProbeNet(nn.Module):
    """A miniature of the models (the module docstring says what it holds), 11 classes."""

    def __init__(self, width: int = 128, classes: int = 11) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, 32, 3, stride=2)
        self.inverted_residual = nn.Sequential(
            ConvBNReLU(32, 96, 1),
            ConvBNReLU(96, 96, 3, groups=96, stride=2),
            nn.Conv2d(96, width, 1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.tokens = nn.Linear(width, width)
        self.lateral = ConvBNReLU(width, width, 3)
        self.classifier = nn.Conv2d(width, classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.inverted_residual(self.stem(images))
        tokens = self.tokens(features.flatten(2).transpose(1, 2))
        features = features + tokens.transpose(1, 2).reshape(features.shape)
        features = F.interpolate(self.lateral(features), scale_factor=2, mode="bilinear")
        return F.interpolate(self.classifier(features), size=images.shape[-2:], mode="bilinear")


PROBE_SHAPES = {"train": (2, 3, 128, 160), "inference": (1, 3, 192, 256)}


def _runner(purpose: Purpose, precision: str, channels_last: bool) -> Callable[[], None]:
    """One call of the probe in one setting (random weights and inputs, from private seeds)."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ProbeNet()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    shape = PROBE_SHAPES[purpose]
    images = torch.randn(shape, generator=generator).contiguous(memory_format=layout)
    classes = model.classifier.out_channels
    labels = torch.randint(0, classes, (shape[0], *shape[2:]), generator=generator)
    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == BF16)

    def call() -> None:
        if purpose == "inference":
            with torch.inference_mode(), torch.autocast(**autocast):
                model(images)
            return
        with torch.autocast(**autocast):
            logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()

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
