"""The training engine (Lightning): :func:`train`, :func:`evaluate` and their parts. It needs
the ``train`` extra (``pip install 'clipfuse[train]'``), checked here, once, on entry."""

from clipfuse.extras import require_extra

require_extra("train", "training and evaluation (clipfuse.engine)")

from clipfuse.engine.datamodule import SegmentationDataModule  # noqa: E402
from clipfuse.engine.optim import PolyWithWarmup, create_optimizer, parameter_groups  # noqa: E402
from clipfuse.engine.run import evaluate, train  # noqa: E402
from clipfuse.engine.task import SegmentationTask  # noqa: E402

__all__ = [
    "PolyWithWarmup",
    "SegmentationDataModule",
    "SegmentationTask",
    "create_optimizer",
    "evaluate",
    "parameter_groups",
    "train",
]
