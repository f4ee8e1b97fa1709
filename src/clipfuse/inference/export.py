"""Export a trained model to ONNX with its vocabulary baked in (``clipfuse export``).

The exported graph takes ``images`` (float32, B x 3 x H x W, normalised as in training: see
the ``mean`` / ``std`` metadata) and returns ``logits`` (B x K x H x W); batch, height and
width are dynamic. The class-name text embeddings are the buffer ``head.text_embeddings``,
so they become constant initialisers: no text encoder is needed to run the model.

Input sizes: the graph pads the image right/bottom with zeros (the mean colour, after
normalisation) to a multiple of 32 and crops the logits back. At sizes that are multiples of
32 this is exactly the PyTorch model; at other sizes PyTorch's :class:`Segmentor` instead
resizes mismatched FPN levels, a branch on the input's shape that a graph traced once cannot
follow, so there the ONNX output equals :class:`ExportableSegmentor` in PyTorch.

Exporters (torch 2.14): ``dynamo`` (default; ``torch.export`` + onnxscript, the supported
path, dynamic dimensions checked while tracing) and ``torchscript`` (the legacy tracer,
deprecated in PyTorch but much faster to export; docs/research/speed.md). Both give the same graph semantics here,
including Conv-Former's stride-3 padding, which is computed from the input size at run time.
"""

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.extras import require
from clipfuse.fileio import atomic_write, prepare_file, remove_partial_files

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS = ("dynamo", "torchscript")
FORMATS = ("onnx",)
DEFAULT_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class ExportableSegmentor(nn.Module):
    """``images -> logits`` for export: pads to a multiple of ``pad_to``, crops back.

    ``pad_to=1`` leaves the input as it is (the exported graph then only works at the sizes
    for which the traced decoder branch holds: multiples of 32 for the stride-32 backbones).
    """

    def __init__(self, model: nn.Module, pad_to: int = 32) -> None:
        super().__init__()
        if pad_to < 1:
            raise ClipfuseError(f"export: pad_to must be a positive integer, got {pad_to}")
        self.model = model
        self.pad_to = pad_to

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if self.pad_to > 1:
            images = F.pad(images, (0, -width % self.pad_to, 0, -height % self.pad_to))
        outputs = self.model(images)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        return logits[..., :height, :width]


def _metadata(model: nn.Module, class_names: Sequence[str] | None, extra: dict | None) -> dict:
    data: dict[str, str] = {"producer": "clipfuse", "input": INPUT_NAME, "output": OUTPUT_NAME}
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "mean"):
        data["mean"] = json.dumps(list(backbone.mean))
        data["std"] = json.dumps(list(backbone.std))
    if class_names is not None:
        data["class_names"] = json.dumps(list(class_names))
    for key, value in (extra or {}).items():
        data[key] = value if isinstance(value, str) else json.dumps(value)
    return data


def export_onnx(
    model: nn.Module,
    out: str | Path,
    size: Sequence[int] = (512, 512),
    class_names: Sequence[str] | None = None,
    exporter: Exporter = "dynamo",
    opset: int = DEFAULT_OPSET,
    pad_to: int = 32,
    metadata: dict | None = None,
) -> Path:
    """Write ``model`` (a :class:`Segmentor`, or any ``images -> logits`` module) to ``out``.

    ``size`` (H, W) is the example input traced (batch 2: a batch of 1 would be specialised);
    the exported axes stay dynamic. ``class_names``, the backbone's ``mean``/``std`` and
    ``metadata`` are written to the ONNX model's metadata (JSON strings).
    """
    if exporter not in EXPORTERS:
        raise ClipfuseError(f"export: exporter {exporter!r}: expected one of {EXPORTERS}")
    height, width = (int(s) for s in size)
    if min(height, width) < 32:
        raise ClipfuseError(f"export: size {height}x{width} is too small (at least 32x32)")
    require("onnx", "ONNX export")
    if exporter == "dynamo":
        require("onnxscript", "ONNX export with the dynamo exporter")
    out = prepare_file(out, "ONNX file")  # before the export work, which takes a while
    wrapper = ExportableSegmentor(model, pad_to=pad_to).eval()
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    example = torch.randn(2, 3, height, width, device=device)
    meta = _metadata(model, class_names, {"pad_to": pad_to, **(metadata or {})})

    def write(path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; the result is tested
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                dim_h = torch.export.Dim("height", min=1, max=16384)
                dim_w = torch.export.Dim("width", min=1, max=16384)
                program = torch.onnx.export(
                    wrapper,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes={"images": {0: batch, 2: dim_h, 3: dim_w}},
                    verbose=False,
                )
                program.save(str(path))
            else:
                axes = {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                )
        _write_metadata(path, meta)

    # Written next to ``out`` and renamed over it: a failed or killed export leaves it intact,
    # and the next export to ``out`` removes what a killed one left.
    remove_partial_files(out.parent, out.name)
    return atomic_write(out, write)


def _write_metadata(path: Path, data: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, data)
    onnx.save(proto, str(path))


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    format: str = "onnx",
    size: Sequence[int] | None = None,
    exporter: Exporter = "dynamo",
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    calibration: int = 8,
    quantized_out: str | Path | None = None,
) -> Path:
    """Export a clipfuse training checkpoint (or pretrained folder); ``size`` defaults to the
    config's crop size. The run's config goes into the metadata (``clipfuse eval`` reads it).
    ``quantize="int8"`` also writes ``quantized_out`` (default ``<name>.int8.onnx``),
    calibrated on ``calibration`` training images (:mod:`clipfuse.inference.quantize`); the
    path of the int8 file is then returned."""
    from clipfuse.build import load_model
    from clipfuse.inference import quantize as quant

    if format not in FORMATS:
        raise ClipfuseError(f"export: format {format!r}: expected one of {FORMATS}")
    if quantize is not None and quantize not in quant.QUANTIZE:
        raise ClipfuseError(f"export: quantize {quantize!r}: expected one of {quant.QUANTIZE}")
    prepare_file(out, "ONNX file")
    loaded = load_model(checkpoint)
    model, config, class_names = loaded.segmentor, loaded.config, loaded.class_names
    size = size or config["data"]["crop_size"]
    model_cfg = config["model"]
    extra = {
        "method": model_cfg["method"],
        "backbone": model_cfg["backbone"],
        "decoder": model_cfg["decoder"],
        "config": json.dumps(config, default=str),
    }
    images = None
    if quantize is not None:  # the images before the export work: a bad dataset fails fast
        mean, std = model.backbone.mean, model.backbone.std
        images = quant.calibration_images(config, mean, std, calibration)
    fp32 = export_onnx(model, out, size, class_names, exporter, opset, metadata=extra)
    if images is None:
        return fp32
    return quant.quantize_int8(fp32, quantized_out or quant.int8_path(fp32), images)


class OnnxSegmentor:
    """Runs an exported model with onnxruntime: ``labels = OnnxSegmentor(path)(rgb_uint8)``.

    Normalises with the ``mean``/``std`` stored in the model, returns the H x W argmax;
    :meth:`logits` takes an already normalised B x 3 x H x W float array.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = require("onnxruntime", "running an ONNX model")

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: a spinning pool keeps the cores from the
        # resize and arg-max that follow each run (docs/research/speed.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.class_names = json.loads(meta["class_names"]) if "class_names" in meta else None
        self.mean = json.loads(meta.get("mean", "[0, 0, 0]"))
        self.std = json.loads(meta.get("std", "[1, 1, 1]"))

    def logits(self, images):
        import numpy as np

        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(images, np.float32)})[0]

    def __call__(self, image):
        import numpy as np

        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        normalised = ((np.asarray(image, np.float32) - mean) / std).transpose(2, 0, 1)[None]
        return self.logits(normalised)[0].argmax(0).astype(np.uint8)


class OnnxLogits(nn.Module):
    """An exported model as the ``images -> {"logits": ...}`` module that evaluation calls
    (onnxruntime's CPU provider); ``config``, ``class_names``, ``mean`` and ``std`` come from
    the file's metadata. A file that ``clipfuse export`` did not write (or wrote before the
    config was stored) is refused."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise ClipfuseError(f"ONNX model {path} not found")
        try:
            self.runner = OnnxSegmentor(path, threads)
        except ClipfuseError:
            raise
        except Exception as error:  # onnxruntime's own errors, many lines long
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise ClipfuseError(f"{path} is not a readable ONNX model: {first}") from None
        meta = self.runner.session.get_modelmeta().custom_metadata_map
        if meta.get("producer") != "clipfuse" or "config" not in meta or "class_names" not in meta:
            raise ClipfuseError(
                f"{path} was not written by clipfuse export (no clipfuse config in its "
                "metadata): export the checkpoint again to evaluate it"
            )
        self.config = json.loads(meta["config"])
        self.class_names = self.runner.class_names
        self.mean, self.std = self.runner.mean, self.runner.std

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        array = images.detach().float().cpu().contiguous().numpy()
        logits = self.runner.logits(array)
        return {"logits": torch.from_numpy(logits).to(images.device)}
