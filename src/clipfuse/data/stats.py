"""How often each class occurs: the number of images holding it (the long tail of a dataset)
and the number of pixels labelled with it (what balanced class weights are computed from)."""

from collections.abc import Iterator

import numpy as np

from clipfuse.data.base import SegmentationDataset, read_mask


def _label_histograms(dataset: SegmentationDataset) -> Iterator[np.ndarray]:
    """Per sample, the number of pixels of each train id (``num_classes`` entries, ignored
    pixels left out), after the dataset's label mapping; only the masks are read."""
    for _, mask_path in dataset.samples:
        labels = dataset.map_labels(read_mask(mask_path))
        yield np.bincount(labels.ravel(), minlength=256)[: dataset.num_classes]


def class_image_counts(dataset: SegmentationDataset) -> dict[str, int]:
    """Class name -> the number of the dataset's images with at least one pixel of it (train
    ids after the dataset's label mapping; only the masks are read)."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for histogram in _label_histograms(dataset):
        counts += histogram > 0
    return dict(zip(dataset.classes, counts.tolist(), strict=True))


def class_pixel_counts(dataset: SegmentationDataset) -> dict[str, int]:
    """Class name -> the number of the dataset's pixels labelled with it (train ids after the
    dataset's label mapping, ignored pixels not counted; one pass over the masks only)."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for histogram in _label_histograms(dataset):
        counts += histogram
    return dict(zip(dataset.classes, counts.tolist(), strict=True))
