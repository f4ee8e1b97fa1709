"""Datasets (CamVid, ADE20K, Cityscapes, CCP, LabelMeFacade, custom folders), their registry, transforms, download.

Every dataset yields ``(image, mask)``: with no transform, RGB ``H x W x 3`` uint8 and train ids
``H x W`` uint8 where 255 is ignored; the transforms of :mod:`clipfuse.data.transforms` turn
them into a float32 ``3 x H x W`` tensor and an int64 ``H x W`` tensor.
"""

from clipfuse.data.ade20k import ADE20K
from clipfuse.data.base import IGNORE_INDEX, SegmentationDataset, default_palette
from clipfuse.data.camvid import CamVid
from clipfuse.data.ccp import CCP
from clipfuse.data.cityscapes import Cityscapes
from clipfuse.data.eval_transform import create_eval_transform
from clipfuse.data.folder import FolderDataset
from clipfuse.data.labelmefacade import LabelMeFacade
from clipfuse.data.registry import (
    DATASETS,
    create_config_dataset,
    create_dataset,
    dataset_classes,
    find_dataset_root,
)
from clipfuse.data.stats import class_image_counts, class_pixel_counts

__all__ = [
    "ADE20K",
    "CCP",
    "DATASETS",
    "IGNORE_INDEX",
    "CamVid",
    "Cityscapes",
    "FolderDataset",
    "LabelMeFacade",
    "SegmentationDataset",
    "create_dataset",
    "create_config_dataset",
    "create_eval_transform",
    "dataset_classes",
    "create_train_transform",
    "class_image_counts",
    "class_pixel_counts",
    "default_palette",
    "find_dataset_root",
]


def __getattr__(name: str):
    """``create_train_transform`` imported when first used: it needs albumentations (the
    ``train`` extra), which loading a model and predicting do not."""
    if name == "create_train_transform":
        from clipfuse.data.transforms import create_train_transform

        return create_train_transform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
