"""Optional dependencies. ``pip install clipfuse`` installs the core: building, loading,
saving and predicting with a model (torch, timm, OpenCV, safetensors, huggingface_hub, ...).
The extras, ``pip install 'clipfuse[train,clip,serve,export,bench]'`` (or ``clipfuse[all]``;
``make setup`` installs all of them with the exact pins it was tested with):

* ``train`` (lightning, torchmetrics, albumentations, tensorboard; scipy for the experiments'
  statistics): ``clipfuse train``, ``eval``, ``eval-vocab``, ``experiment``,
  :mod:`clipfuse.engine` and the metrics;
* ``clip`` (open_clip, transformers): the ``open_clip:`` and ``hf:`` text encoders, which embed
  any class name (a bank of precomputed vectors, the default, needs neither);
* ``serve`` (fastapi, uvicorn, python-multipart): ``clipfuse serve``;
* ``export`` (onnx, onnxscript, onnxruntime): ``clipfuse export``, ``bench --paths ort-*``;
* ``bench`` (segmentation_models_pytorch: ``bench --smp-reference``; matplotlib: the
  experiment plots).

A missing one is a one-line error naming the extra (:func:`require`)."""

import importlib
import importlib.util
from types import ModuleType

from clipfuse.errors import ClipfuseError

# extra -> the modules it installs (import names; pyproject.toml lists the distributions)
EXTRAS = {
    "train": ("lightning", "torchmetrics", "albumentations", "tensorboard", "scipy"),
    "clip": ("open_clip", "transformers"),
    "serve": ("fastapi", "uvicorn", "python_multipart"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "bench": ("segmentation_models_pytorch", "matplotlib"),
}


def _missing(module: str, purpose: str) -> ClipfuseError:
    top = module.split(".")[0]
    extra = next(name for name, modules in EXTRAS.items() if top in modules)
    return ClipfuseError(
        f"{purpose} needs {top}, which is not installed: pip install 'clipfuse[{extra}]'"
    )


def require(module: str, purpose: str) -> ModuleType:
    """``import module`` for ``purpose`` (e.g. ``"clipfuse serve"``), else a one-line error
    naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise _missing(module, purpose) from error


def require_extra(extra: str, purpose: str) -> None:
    """Check that every module of ``extra`` is installed (without importing them), else a
    one-line error naming the first one missing and the extra."""
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules
            found = False
        if not found:
            raise _missing(module, purpose)
