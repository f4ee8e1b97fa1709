"""Numeric precision and memory format of training and inference.

``train.precision: auto`` and ``train.channels_last: auto`` on a CPU take the setting that the
probe of :mod:`clipfuse.cpu_probe` measured fastest on this CPU (fp32 or bf16 autocast, Lightning's
``bf16-mixed``; contiguous or channels-last tensors), announced in one line with the measured
speed of each setting; CPU flags do not decide it. On a CUDA GPU ``auto`` is ``bf16-mixed`` where
the GPU has bf16, else fp16 with loss scaling (``16-mixed``), with channels-last tensors (cuDNN's
tensor-core convolutions' layout). The resolved values are what the run's ``config.yaml``
records. ``eval.precision: auto`` (``predict``, ``eval``, ``serve``, ``bench``) follows the same
rule for the forward pass alone, so a model trained in bf16 is served in fp32 where fp32 is
faster, and its layout is the inference verdict's (:func:`inference_channels_last`).

Inference casts the weights autocast would cast on every forward once (:class:`AutocastWeights`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from clipfuse.cpu_probe import cpu_verdict
from clipfuse.errors import ClipfuseError

AUTO = "auto"
FP32 = "32-true"
BF16 = "bf16-mixed"
MIXED = ("bf16-mixed", "16-mixed", "bf16-true", "16-true")


def training_device(accelerator: str) -> str:
    """``cuda`` or ``cpu``: where Lightning's ``accelerator`` setting will put the run."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def cuda_precision() -> str:
    """``bf16-mixed`` on a GPU with bf16, else ``16-mixed`` (fp16 with a gradient scaler)."""
    return BF16 if torch.cuda.is_bf16_supported() else "16-mixed"


def resolve_precision(
    precision: str, channels_last: bool | str, accelerator: str = "auto"
) -> tuple[str, bool, str | None]:
    """``(precision, channels_last, note)`` with ``auto`` replaced by this machine's choice;
    ``note`` is the line that announces an automatic choice (None when both were explicit)."""
    automatic = AUTO in (precision, channels_last)
    cuda = training_device(accelerator) == "cuda"
    reason = f"train.precision={precision}"
    if precision == AUTO and cuda:
        precision = cuda_precision()
        reason = "this GPU has bf16" if precision == BF16 else "this GPU has no bf16"
    if cuda or precision not in (AUTO, FP32, BF16):  # GPUs, and precisions the probe does not time
        if channels_last == AUTO:
            channels_last = precision in MIXED
    elif automatic:
        verdict, source = cpu_verdict("train")
        if precision == AUTO:
            precision = verdict.precision
        if channels_last == AUTO:
            channels_last = verdict.fastest_layout(precision)
        reason = f"speed against fp32 contiguous: {verdict.speedups()}; {source}"
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
    ``auto``: on a CPU the probe's fastest for inference, on a GPU bf16 or fp16."""
    if precision == AUTO:
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if cuda_precision() == BF16 else torch.float16
        return torch.bfloat16 if cpu_verdict("inference")[0].precision == BF16 else None
    if precision in ("bf16-mixed", "bf16-true"):
        return torch.bfloat16
    if precision in ("16-mixed", "16-true"):
        return torch.float16
    if precision in (FP32, "32"):
        return None
    raise ClipfuseError(
        f"eval.precision {precision!r} is unknown: expected auto, 32-true, bf16-mixed or 16-mixed"
    )


def inference_channels_last(precision: str, device: torch.device | str) -> bool:
    """Whether inference at ``eval.precision`` on ``device`` runs in channels-last tensors: on a
    CPU where the probe measured that layout faster for that precision, on a GPU for bf16 / fp16."""
    dtype = inference_dtype(precision, device)
    if torch.device(device).type != "cpu":
        return dtype is not None
    if dtype not in (None, torch.bfloat16):
        return False
    return cpu_verdict("inference")[0].fastest_layout(BF16 if dtype else FP32)


# The modules whose weights CPU and CUDA autocast cast to the lower precision on every call.
AUTOCAST_MODULES = (nn.modules.conv._ConvNd, nn.Linear)


def inference_path_name(dtype: torch.dtype | None, channels_last: bool) -> str:
    """An inference setting in ``clipfuse bench --paths`` words: ``eager-fp32``,
    ``eager-bf16-cl`` (autocast ``dtype``, None for fp32; ``-cl``: channels-last)."""
    arithmetic = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return f"eager-{arithmetic}{'-cl' if channels_last else ''}"


class AutocastWeights:
    """The convolution and linear weights of ``model`` cast once to the autocast ``dtype`` and
    swapped in while it predicts (:meth:`applied`): ``predict``, ``eval``, ``serve``, ``bench``.

    Autocast casts these weights on every forward pass: its cache lasts one autocast region and
    is off under ``torch.inference_mode``; the Conv-Former holds 60.8 M such weights against
    plain FPN's 8.4 M (what it saves: docs/research/speed.md, "Inference paths"). The cast here
    rounds
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
