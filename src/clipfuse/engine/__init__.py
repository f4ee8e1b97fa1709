from clipfuse.engine.datamodule import SegmentationDataModule
from clipfuse.engine.optim import PolyWithWarmup, create_optimizer, parameter_groups
from clipfuse.engine.run import evaluate, train
from clipfuse.engine.task import SegmentationTask

__all__ = [
    "PolyWithWarmup",
    "SegmentationDataModule",
    "SegmentationTask",
    "create_optimizer",
    "evaluate",
    "parameter_groups",
    "train",
]
