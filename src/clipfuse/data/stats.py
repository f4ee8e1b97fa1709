"""How often each class occurs: the number of images holding it (the long tail of a dataset)."""

import numpy as np

from clipfuse.data.base import SegmentationDataset, read_mask


def class_image_counts(dataset: SegmentationDataset) -> dict[str, int]:
    """Class name -> the number of the dataset's images with at least one pixel of it (train
    ids after the dataset's label mapping; only the masks are read)."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for _, mask_path in dataset.samples:
        labels = dataset.map_labels(read_mask(mask_path))
        present = np.bincount(labels.ravel(), minlength=256)[: dataset.num_classes] > 0
        counts += present
    return dict(zip(dataset.classes, counts.tolist(), strict=True))
