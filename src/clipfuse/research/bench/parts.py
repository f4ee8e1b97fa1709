"""Inference latency by part (``clipfuse bench --parts``): where a model's time goes on each
inference path, so that a lighter model aims at the part that costs.

A :class:`~clipfuse.models.Segmentor` is cut into the parts its ``forward`` runs in turn
(docs/research/method.md Sec. 3): the backbone (image -> ``[c2, c3, c4, c5]``), the language head
where the model has one (``c5`` -> fused ``c5`` and the score map: Conv-Former, DenseCLIP), the
decoder (features -> logits, with the text classifier where the logits are similarities with
the class embeddings) and the upsampling of the logits to the input size. Each part is timed
alone, at batch 1, on the inputs the part before it produced on the same path (captured once:
on eager paths under the path's own autocast and layout, so a bf16 decoder gets bf16 features;
on ONNX Runtime paths from the fp32 model), and on the ``ort-*`` paths each part is exported
and, for ``ort-int8``, quantized on its own, calibrated on the inputs of
:data:`~clipfuse.research.bench.paths.CALIBRATION_IMAGES` random images. All parts x paths x
models are timed by one round-robin. The whole model's time on the path (the paths table) is
reported beside the sum of its parts: the difference is what running the parts apart costs or
saves (the ONNX export of the whole model also pads the input to a multiple of 32; the parts
see the benchmark size). Models that are not Segmentors (``--smp-reference``) are skipped.
"""

import tempfile
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipfuse.extras import require
from clipfuse.models import Segmentor
from clipfuse.precision import inference_dtype
from clipfuse.research.bench.candidates import Candidate
from clipfuse.research.bench.paths import (
    CALIBRATION_IMAGES,
    EVAL_PRECISION,
    PATHS,
    model_layouts,
    session_options,
)
from clipfuse.research.bench.timing import inference_runner, random_batch, summarize_ms

PARTS = ("backbone", "language head", "decoder", "upsampling")


class BackbonePart(nn.Module):
    """Images -> the backbone's features as a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(images))


class LanguageHeadPart(nn.Module):
    """``c5`` -> (fused ``c5``, score map): the model's language head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(last)


class DecoderPart(nn.Module):
    """Features -> logits at the decoder's resolution (the text classifier included)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder, self.text_classifier, self.head = model.decoder, model.text_classifier, None
        if model.text_classifier is not None:
            self.head = model.head

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(list(features))
        if self.text_classifier is not None:
            logits = self.text_classifier(logits, self.head.text_embeddings)
        return logits


class UpsamplingPart(nn.Module):
    """Logits -> logits at the input size, as :class:`~clipfuse.models.Segmentor` resizes."""

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=self.size, mode="bilinear", align_corners=False)


def model_parts(model: nn.Module, size: Sequence[int]) -> dict[str, nn.Module]:
    """The parts of ``model`` (sharing its modules, in eval mode) in the order its forward
    runs them; a model without a language head has none."""
    parts = {"backbone": BackbonePart(model)}
    if model.head is not None:
        parts["language head"] = LanguageHeadPart(model)
    parts["decoder"] = DecoderPart(model)
    parts["upsampling"] = UpsamplingPart(size)
    # in eval mode, as the model is: an exporter restores each part's own mode on its children
    return {name: part.eval() for name, part in parts.items()}


def part_inputs(
    parts: dict[str, nn.Module], images: torch.Tensor, dtype: torch.dtype | None
) -> dict[str, tuple[torch.Tensor, ...]]:
    """The positional inputs of each part when the parts run in turn on ``images`` (under
    autocast to ``dtype`` where given): each part's are what the one before it returned."""
    inputs = {"backbone": (images,)}
    autocast = torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None)
    with torch.no_grad(), autocast:
        features = parts["backbone"](images)
        if "language head" in parts:
            inputs["language head"] = (features[-1],)
            fused, _ = parts["language head"](features[-1])
            features = (*features[:-1], fused)
        inputs["decoder"] = tuple(features)
        inputs["upsampling"] = (parts["decoder"](*features),)
    return inputs


def measure_parts(
    candidates: list[Candidate],
    paths: Sequence[str],
    job: dict,
    device: torch.device,
    channels_last: bool,
    timer: Callable[[list], dict[str, list[float]]],
    say: Callable[[str], None],
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Seconds of each timed call per Segmentor candidate's name, part and path (batch 1),
    all timed together by ``timer``; ``job`` has the input ``size`` and the ``threads``; the
    models are in the layout ``channels_last`` says."""
    size, threads = job["size"], job["threads"]
    images, _ = random_batch(1, size, device, 1)
    runners = []
    for candidate in candidates:
        if not isinstance(candidate.model, Segmentor):
            continue
        layouts = model_layouts(candidate.model, channels_last, paths)
        for path in paths:
            if PATHS[path].runtime == "ort":
                continue
            setting = PATHS[path]
            parts = model_parts(layouts[setting.channels_last], size)
            layout = torch.channels_last if setting.channels_last else torch.contiguous_format
            dtype = inference_dtype(EVAL_PRECISION[setting.arithmetic], device)
            inputs = part_inputs(parts, images.contiguous(memory_format=layout), dtype)
            for name, part in parts.items():
                runners.append(
                    (f"{candidate.name}|{name}|{path}", inference_runner(part, inputs[name], dtype))
                )
        ort_paths = [path for path in paths if PATHS[path].runtime == "ort"]
        if ort_paths:
            say(f"ONNX export of the parts of {candidate.name}")
            parts = model_parts(layouts[False], size)
            for (name, path), run in _ort_runners(parts, images, ort_paths, threads).items():
                runners.append((f"{candidate.name}|{name}|{path}", run))
    say(f"inference by part, {len(paths)} path(s)")
    result: dict[str, dict[str, dict[str, list[float]]]] = {}
    for key, seconds in timer(runners).items():
        model, part, path = key.split("|")
        result.setdefault(model, {}).setdefault(part, {})[path] = seconds
    return result


def _ort_runners(
    parts: dict[str, nn.Module], images: torch.Tensor, paths: Sequence[str], threads: int
) -> dict[tuple[str, str], Callable[[], None]]:
    """A call of an onnxruntime session per part and ort path: each part exported alone (the
    ``torchscript`` exporter, fixed shapes) and, for ``ort-int8``, quantized alone."""
    ort = require("onnxruntime", f"bench --parts with {' '.join(paths)}")
    onnx = require("onnx", f"bench --parts with {' '.join(paths)}")
    from clipfuse.inference.export import DEFAULT_OPSET
    from clipfuse.inference.quantize import quantize_int8

    generator = torch.Generator().manual_seed(0)
    calibration = [
        part_inputs(parts, torch.randn(1, 3, *images.shape[-2:], generator=generator), None)
        for _ in range(CALIBRATION_IMAGES)
    ]
    timed = part_inputs(parts, images.cpu(), None)
    options = session_options(ort, threads)
    runners = {}
    with tempfile.TemporaryDirectory(prefix="clipfuse-bench-parts-") as folder:
        for index, (name, part) in enumerate(parts.items()):
            names = [f"input{i}" for i in range(len(timed[name]))]
            files = {"ort-fp32": Path(folder) / f"part{index}.onnx"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's chatter
                torch.onnx.export(
                    part,
                    timed[name],
                    str(files["ort-fp32"]),
                    dynamo=False,
                    opset_version=DEFAULT_OPSET,
                    input_names=names,
                )
            # an input the part does not read (a decoder on three of the four levels) is
            # dropped by the export: feed what the graph takes
            used = {node.name for node in onnx.load(str(files["ort-fp32"])).graph.input}
            if "ort-int8" in paths:
                files["ort-int8"] = Path(folder) / f"part{index}.int8.onnx"
                feeds = [_feed(names, inputs[name], used) for inputs in calibration]
                quantize_int8(files["ort-fp32"], files["ort-int8"], feeds)
            for path in paths:
                session = ort.InferenceSession(
                    str(files[path]), options, providers=["CPUExecutionProvider"]
                )
                feed = _feed(names, timed[name], used)
                runners[name, path] = partial(session.run, None, feed)
    return runners


def _feed(
    names: list[str], tensors: tuple[torch.Tensor, ...], used: set[str]
) -> dict[str, np.ndarray]:
    pairs = zip(names, tensors, strict=True)
    return {name: tensor.float().numpy() for name, tensor in pairs if name in used}


def part_gmacs(info: dict) -> dict[str, float]:
    """GMACs of each part from the groups of :func:`clipfuse.analysis.segmentor_cost`: the
    decoder's include what no group covers (the text classifier); upsampling counts none."""
    groups = info["groups"]
    gmacs = {"backbone": groups["backbone"]["gmacs"]}
    if "fusion" in groups:
        gmacs["language head"] = groups["fusion"]["gmacs"]
    gmacs["decoder"] = groups["decoder"]["gmacs"] + groups.get("other", {}).get("gmacs", 0.0)
    gmacs["upsampling"] = 0.0
    return gmacs


def parts_figures(
    samples: dict[str, dict[str, dict[str, list[float]]]],
    candidates: list[Candidate],
    rows: list[dict],
    peaks: dict[str, dict],
) -> dict[str, dict]:
    """Per model: each part's GMACs and, per path, its ms summary, ``share`` (of the sum of
    the parts), ``gflops`` and ``peak_fraction`` (of the path's matmul peak in ``peaks``);
    per path the ``sum`` of the parts' medians and the ``whole`` model's batch-1 median from
    its row's paths table (None where batch 1 was not timed)."""
    infos = {c.name: c.info for c in candidates}
    whole_rows = {row["name"]: row.get("paths", {}) for row in rows}
    figures = {}
    for model, parts in samples.items():
        gmacs = part_gmacs(infos[model])
        paths = list(next(iter(parts.values())))
        table = {
            part: {"gmacs": gmacs[part], "paths": {p: summarize_ms(t) for p, t in by_path.items()}}
            for part, by_path in parts.items()
        }
        sums = {p: sum(table[part]["paths"][p]["median"] for part in table) for p in paths}
        for entry in table.values():
            for path, summary in entry["paths"].items():
                summary["share"] = summary["median"] / sums[path]
                summary["gflops"] = 2 * entry["gmacs"] / (summary["median"] / 1000)
                summary["peak_fraction"] = (
                    summary["gflops"] / peaks[PATHS[path].arithmetic]["gflops"]
                )
        whole = {p: whole_rows[model].get(p, {}).get("1", {}).get("median") for p in paths}
        figures[model] = {"parts": table, "sum": sums, "whole": whole}
    return figures


def format_parts(result: dict, name_width: int) -> str:
    """The table of the parts: model x path, per part the median ms and % of the path's
    peak, then the sum of the parts and the whole model's ms."""
    settings = result["settings"]
    lines = [
        f"inference by part, batch 1: median ms of {settings['repeats']} calls after "
        f"{settings['warmup']} warm-up, each part alone on what the part before it gave on the "
        "same path, all interleaved round-robin",
        "% pk = 2 x the part's GMACs / median, of the path's matmul peak; sum = of the parts; "
        "whole = the model on the path (the paths table; ort-* pad the input to 32)",
    ]
    header = f"{'model':<{name_width}}{'path':<15}"
    for part in PARTS:
        header += f"{part + ' ms':>18}{'% pk':>6}"
    lines.append(header + f"{'sum ms':>9}{'whole ms':>10}")
    for model, figures in result["parts"].items():
        for index, path in enumerate(figures["sum"]):
            line = f"{model if index == 0 else '':<{name_width}}{path:<15}"
            for part in PARTS:
                entry = figures["parts"].get(part)
                if entry is None:
                    line += f"{'-':>18}{'':>6}"
                    continue
                summary = entry["paths"][path]
                line += f"{summary['median']:>18.1f}{100 * summary['peak_fraction']:>6.1f}"
            whole = figures["whole"][path]
            line += f"{figures['sum'][path]:>9.1f}" + (f"{whole:>10.1f}" if whole else f"{'-':>10}")
            lines.append(line)
    return "\n".join(lines)
