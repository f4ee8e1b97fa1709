from clipfuse.engine.datamodule import SegmentationDataModule
from clipfuse.engine.optim import PolyWithWarmup, build_optimizer, parameter_groups
from clipfuse.engine.run import evaluate, train
from clipfuse.engine.task import SegmentationTask

__all__ = [
    "PolyWithWarmup",
    "SegmentationDataModule",
    "SegmentationTask",
    "build_optimizer",
    "evaluate",
    "parameter_groups",
    "train",
]
