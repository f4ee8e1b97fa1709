"""clipfuse: language-guided lightweight semantic segmentation."""

from clipfuse.errors import ClipfuseError

__all__ = ["ClipfuseError", "create_model", "from_pretrained", "list_models", "load"]
__version__ = "0.1.0"


def load(path, device=None, revision=None):
    """A trained model, ready to ``predict``: from a folder written by ``save_pretrained``, a
    training checkpoint (``.ckpt``) or a Hugging Face Hub id (``"owner/name"``, at
    ``revision``; cached as the hub caches), on ``device`` (``"cpu"``, ``"cuda"``; default CUDA
    if available), or an ``.onnx`` file from ``clipfuse export`` (onnxruntime, CPU). See :func:`clipfuse.inference.load` (imported here only when called, so
    ``import clipfuse`` stays light)."""
    from clipfuse.inference.pretrained import load as _load

    return _load(path, device=device, revision=revision)


from_pretrained = load  # the name smp and transformers users reach for


def __getattr__(name: str):
    """``create_model`` and ``list_models`` (:mod:`clipfuse.models.api`), imported on first
    use so that ``import clipfuse`` stays light."""
    if name in ("create_model", "list_models"):
        from clipfuse.models import api

        return getattr(api, name)
    raise AttributeError(f"module 'clipfuse' has no attribute {name!r}")
