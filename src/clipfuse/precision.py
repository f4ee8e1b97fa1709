"""Numeric precision and memory format of training and inference.

``train.precision: auto`` picks bf16 autocast (Lightning's ``bf16-mixed``) where the device
computes bf16 natively — a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX — fp16 with
loss scaling (``16-mixed``) on an older GPU, and fp32 (``32-true``) on other CPUs;
``train.channels_last: auto`` follows it (channels-last tensors are what oneDNN's and cuDNN's
bf16 convolutions are fastest on). On this project's
2-core AMD EPYC this trains 2-2.5x faster than fp32 (docs/speed.md). The choice is announced
in one line and the resolved values are what the run's ``config.yaml`` records.

Inference casts the weights autocast would cast on every forward once (:class:`AutocastWeights`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from clipfuse.errors import ClipfuseError

AUTO = "auto"
FP32 = "32-true"
BF16 = "bf16-mixed"
MIXED = ("bf16-mixed", "16-mixed", "bf16-true", "16-true")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX) through oneDNN."""
    return torch.backends.mkldnn.is_available() and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def has_native_bf16(device_type: str) -> bool:
    """Whether this machine's ``cuda`` or ``cpu`` device computes bf16 natively."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and cpu_has_fast_bf16()


def training_device(accelerator: str) -> str:
    """``cuda`` or ``cpu``: where Lightning's ``accelerator`` setting will put the run."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_precision(
    precision: str, channels_last: bool | str, accelerator: str = "auto"
) -> tuple[str, bool, str | None]:
    """``(precision, channels_last, note)`` with ``auto`` replaced by this machine's choice;
    ``note`` is the line that announces an automatic choice (None when both were explicit)."""
    automatic = AUTO in (precision, channels_last)
    reason = f"train.precision={precision}"
    if precision == AUTO:
        device = training_device(accelerator)
        fast = has_native_bf16(device)
        if device == "cuda":
            reason = "this GPU has bf16" if fast else "this GPU has no bf16: fp16 with loss scaling"
            precision = BF16 if fast else "16-mixed"
        else:
            reason = "this CPU has AVX512-BF16/AMX" if fast else "this CPU has no native bf16"
            precision = BF16 if fast else FP32
    if channels_last == AUTO:
        channels_last = precision in MIXED
    if not automatic:
        return precision, channels_last, None
    layout = "channels-last" if channels_last else "contiguous"
    return precision, channels_last, f"training in {precision} with {layout} tensors ({reason})"


def with_resolved_precision(config: dict) -> tuple[dict, str | None]:
    """``config`` with ``train.precision`` / ``train.channels_last`` ``auto`` resolved for this
    machine (what a run's config.yaml records), and the note announcing the choice."""
    train = config["train"]
    precision, channels_last, note = resolve_precision(
        train["precision"], train.get("channels_last", AUTO), train["accelerator"]
    )
    train = {**train, "precision": precision, "channels_last": channels_last}
    return {**config, "train": train}, note


def inference_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``eval.precision`` on ``device`` (None: fp32, no autocast);
    ``auto`` is bf16 where the device computes it natively."""
    if precision == AUTO:
        return torch.bfloat16 if has_native_bf16(torch.device(device).type) else None
    if precision in ("bf16-mixed", "bf16-true"):
        return torch.bfloat16
    if precision in ("16-mixed", "16-true"):
        return torch.float16
    if precision in (FP32, "32"):
        return None
    raise ClipfuseError(
        f"eval.precision {precision!r} is unknown: expected auto, 32-true, bf16-mixed or 16-mixed"
    )


# The modules whose weights CPU and CUDA autocast cast to the lower precision on every call.
AUTOCAST_MODULES = (nn.modules.conv._ConvNd, nn.Linear)


class AutocastWeights:
    """The convolution and linear weights of ``model`` cast once to the autocast ``dtype`` and
    swapped in while it predicts (:meth:`applied`): ``predict``, ``eval``, ``serve``, ``bench``.

    Autocast casts these weights on every forward pass: its cache lasts one autocast region and
    is off under ``torch.inference_mode``; the Conv-Former holds 60.8 M such weights against
    plain FPN's 8.4 M (what it saves: docs/speed.md, "Inference paths"). The cast here rounds
    as autocast's does, so outputs are bit-identical; the fp32 tensors are what the model holds
    outside :meth:`applied` (saving, fingerprints, training). A weight changed in place or moved
    since its cast is cast again. ``dtype`` None (fp32 inference): nothing is cast.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype | None) -> None:
        self.dtype = dtype
        weights = {}
        if dtype is not None:
            for module in model.modules():
                if isinstance(module, AUTOCAST_MODULES):
                    for weight in (module.weight, module.bias):
                        if weight is not None and weight.dtype == torch.float32:
                            weights[id(weight)] = weight
        self.weights = list(weights.values())
        self._casts: dict[int, tuple[tuple, torch.Tensor]] = {}

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the cast weights inside, its own fp32 tensors again on exit."""
        originals = [weight.data for weight in self.weights]
        try:
            for weight in self.weights:
                weight.data = self._cast(weight)
            yield
        finally:
            for weight, data in zip(self.weights, originals, strict=True):
                weight.data = data

    def _cast(self, weight: nn.Parameter) -> torch.Tensor:
        state = (weight._version, weight.data_ptr(), weight.device)
        cached = self._casts.get(id(weight))
        if cached is None or cached[0] != state:
            # A normal tensor even when called under inference_mode (training may follow).
            with torch.inference_mode(False), torch.no_grad():
                cached = (state, weight.data.to(self.dtype))
            self._casts[id(weight)] = cached
        return cached[1]
