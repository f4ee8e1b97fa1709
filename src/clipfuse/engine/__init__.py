from clipfuse.engine.datamodule import SegmentationDataModule
from clipfuse.engine.optim import PolyWithWarmup, build_optimizer, parameter_groups
from clipfuse.engine.run import build_model, evaluate, load_checkpoint, train
from clipfuse.engine.task import SegmentationTask

__all__ = [
    "PolyWithWarmup",
    "SegmentationDataModule",
    "SegmentationTask",
    "build_model",
    "build_optimizer",
    "evaluate",
    "load_checkpoint",
    "parameter_groups",
    "train",
]
