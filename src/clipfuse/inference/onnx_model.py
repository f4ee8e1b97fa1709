"""An exported ``.onnx`` file behind :class:`~clipfuse.inference.pretrained.ClipfuseModel`'s
``predict``: what :func:`clipfuse.load` returns for a ``clipfuse export`` file."""

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch

from clipfuse.errors import ClipfuseError
from clipfuse.inference.labels import LabelChoice, LabelsArg, dataset_palette
from clipfuse.inference.predict import BatchRunner
from clipfuse.inference.pretrained import ClipfuseModel
from clipfuse.precision import AutocastWeights


class OnnxModel(ClipfuseModel):
    """A model exported by ``clipfuse export`` (an ``.onnx`` file, fp32 or int8), run by
    onnxruntime on the CPU behind the same :meth:`predict` as a PyTorch model: the trained
    classes or a subset / renaming of them, resized and normalised as the run's config says
    (stored in the file), always in fp32 around the graph (no autocast, no precision probe).
    Open vocabulary needs the text head, which the export bakes in: refused.
    ``inference_path`` is ``ort-fp32`` or ``ort-int8``; ``fingerprint`` is the file's SHA-256;
    ``save_pretrained`` is refused (the PyTorch weights are not in the file)."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None) -> None:
        from clipfuse.data import default_palette
        from clipfuse.inference.export import OnnxLogits

        self.path = Path(path)
        self.to(device)
        self.segmentor = OnnxLogits(self.path, threads=torch.get_num_threads())
        self.config = self.segmentor.config
        self.class_names = list(self.segmentor.class_names)
        palette = dataset_palette(self.config, self.class_names)
        palette = default_palette(len(self.class_names)) if palette is None else palette
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(len(self.class_names), 3)
        self.source = str(self.path)
        self.mean = tuple(float(m) for m in self.segmentor.mean)
        self.std = tuple(float(s) for s in self.segmentor.std)
        fp32 = {**self.config, "eval": {**self.config["eval"], "precision": "32-true"}}
        self._runner = BatchRunner(self.mean, self.std, fp32)
        self._trained_text = None
        self._lock = threading.RLock()
        self._autocast_weights = AutocastWeights(self.segmentor, None)  # nothing to cast
        meta = self.segmentor.runner.session.get_modelmeta().custom_metadata_map
        self._path_name = "ort-int8" if meta.get("quantization") == "int8" else "ort-fp32"

    @property
    def supports_open_vocab(self) -> bool:
        return False

    @property
    def inference_path(self) -> str:
        return self._path_name

    def resolve_labels(self, labels: LabelsArg = None, open_vocab: bool = False) -> LabelChoice:
        if open_vocab:
            raise ClipfuseError(
                f"{self.path} is an exported ONNX file with its vocabulary baked in: open "
                "vocabulary needs the checkpoint or pretrained folder"
            )
        return super().resolve_labels(labels)

    def to(self, device: str | torch.device | None) -> "OnnxModel":
        """Only the CPU (``None`` / ``"auto"`` / ``"cpu"``): onnxruntime's CPU provider."""
        if device is not None and str(device) != "auto" and str(device).partition(":")[0] != "cpu":
            raise ClipfuseError(
                f"{self.path} runs on onnxruntime's CPU: expected device auto or cpu, "
                f"got {str(device)!r}"
            )
        self.device = torch.device("cpu")
        return self

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def save_pretrained(self, directory: str | os.PathLike, **options) -> Path:
        raise ClipfuseError(
            f"{self.path} is an exported ONNX file: save_pretrained needs the PyTorch model "
            "(its checkpoint or pretrained folder)"
        )
