"""Optional dependencies, installed with ``pip install 'clipfuse[serve,export,bench]'``
(``make setup`` installs all of them): ``serve`` (fastapi, uvicorn: ``clipfuse serve``),
``export`` (onnx, onnxscript, onnxruntime: ``clipfuse export``, ``bench --paths ort-*``) and
``bench`` (segmentation_models_pytorch: ``bench --smp-reference``; matplotlib: the experiment
plots).
A missing one is a one-line error naming the extra."""

import importlib
from types import ModuleType

from clipfuse.errors import ClipfuseError

EXTRAS = {
    "serve": ("fastapi", "uvicorn", "python_multipart"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "bench": ("segmentation_models_pytorch", "matplotlib"),
}


def require(module: str, purpose: str) -> ModuleType:
    """``import module`` for ``purpose`` (e.g. ``"clipfuse serve"``), else a one-line error
    naming the extra that installs it."""
    extra = next(name for name, modules in EXTRAS.items() if module.split(".")[0] in modules)
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ClipfuseError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: "
            f"pip install 'clipfuse[{extra}]'"
        ) from error
