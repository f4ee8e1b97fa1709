"""``clipfuse export --quantize int8``: onnxruntime static quantization of an exported model.

QDQ format, int8 weights per output channel, uint8 activations calibrated (min/max) on
``calibration`` training images prepared as eval prepares them (the dataset's eval transform:
resize and the model's normalisation), each fed at its own size, batch 1. The fp32 graph is
first run through onnxruntime's ``quant_pre_process`` (ONNX shape inference and graph
optimisation; the symbolic shape inference is skipped: it fails on this graph's dynamic
padding). The clipfuse metadata (class names, normalisation, config) is copied over.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clipfuse.errors import ClipfuseError
from clipfuse.extras import require
from clipfuse.fileio import atomic_write, prepare_file

QUANTIZE = ("int8",)
DEFAULT_CALIBRATION = 8


def int8_path(fp32: str | Path) -> Path:
    """``model.onnx -> model.int8.onnx``."""
    fp32 = Path(fp32)
    return fp32.with_name(f"{fp32.stem}.int8{fp32.suffix or '.onnx'}")


def calibration_images(config: dict, mean, std, count: int) -> list[np.ndarray]:
    """The first ``count`` training images of the run's dataset through its eval transform,
    as 1 x 3 x H x W float32 arrays."""
    from clipfuse.data import create_config_dataset, create_eval_transform

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ClipfuseError(f"export: --calibration must be a positive integer, got {count!r}")
    data = config["data"]
    size = data.get("val_size")  # as SegmentationDataModule makes the eval transform
    size = tuple(size) if isinstance(size, (list, tuple)) else size
    transform = create_eval_transform(mean=tuple(mean), std=tuple(std), size=size)
    try:
        dataset = create_config_dataset(config, "train", transform)
    except (FileNotFoundError, OSError) as error:
        raise ClipfuseError(
            f"export: the calibration images of dataset {data['dataset']!r} were not found "
            f"({error}); set data.root or $CLIPFUSE_DATA"
        ) from None
    if len(dataset) == 0:
        raise ClipfuseError(f"export: dataset {data['dataset']!r} has no training images")
    return [dataset[i][0].numpy()[None] for i in range(min(count, len(dataset)))]


def quantize_int8(
    fp32: str | Path, out: str | Path, images: list[np.ndarray] | list[dict[str, np.ndarray]]
) -> Path:
    """Write the int8 (QDQ) version of the exported ``fp32`` model to ``out`` atomically,
    calibrated on ``images`` (arrays of the ``images`` input, or whole feeds: input name ->
    array, for a graph with other inputs)."""
    require("onnxruntime", "int8 quantization")
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from clipfuse.inference.export import INPUT_NAME, _write_metadata

    out = prepare_file(out, "int8 ONNX file")
    metadata = {
        p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props
    }

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray | dict[str, np.ndarray]] = iter(images)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            feed = batch if isinstance(batch, dict) else {INPUT_NAME: batch}
            return {name: array.astype(np.float32) for name, array in feed.items()}

    def write(path: Path) -> None:
        prepared = path.with_name(f"{path.stem}.prepared.onnx")
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        finally:
            prepared.unlink(missing_ok=True)
        _write_metadata(path, {**metadata, "quantization": "int8"})

    return atomic_write(out, write)
