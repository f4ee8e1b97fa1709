"""clipfuse: language-guided lightweight semantic segmentation."""

from clipfuse.errors import ClipfuseError

__all__ = ["ClipfuseError"]
__version__ = "0.1.0"
