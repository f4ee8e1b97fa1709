"""clipfuse: language-guided lightweight semantic segmentation."""

from clipfuse.errors import ClipfuseError

__all__ = ["ClipfuseError", "load"]
__version__ = "0.1.0"


def load(path, device=None):
    """A trained model, ready to ``predict``: from a folder written by ``save_pretrained`` or a
    training checkpoint (``.ckpt``), on ``device`` (``"cpu"``, ``"cuda"``; default CUDA if
    available). See :func:`clipfuse.inference.load` (imported here only when called, so
    ``import clipfuse`` stays light)."""
    from clipfuse.inference.pretrained import load as _load

    return _load(path, device=device)
