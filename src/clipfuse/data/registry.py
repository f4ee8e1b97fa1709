"""Datasets by name, and where their folders are found on disk."""

import os
from pathlib import Path

from clipfuse.data.ade20k import ADE20K
from clipfuse.data.base import SegmentationDataset, Transform
from clipfuse.data.camvid import CamVid
from clipfuse.data.ccp import CCP
from clipfuse.data.cityscapes import Cityscapes
from clipfuse.data.folder import FolderDataset
from clipfuse.data.labelmefacade import LabelMeFacade
from clipfuse.errors import ClipfuseError
from clipfuse.paths import cache_dir, data_roots

DATASETS: dict[str, type[SegmentationDataset]] = {
    "camvid": CamVid,
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "ccp": CCP,
    "labelmefacade": LabelMeFacade,
    "folder": FolderDataset,
}


def download_root() -> Path:
    """Where ``clipfuse data download`` puts datasets by default: ``<cache>/data``."""
    return cache_dir() / "data"


def dataset_class(name: str) -> type[SegmentationDataset]:
    """The registered class of ``name``; a :class:`ClipfuseError` listing the known names."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ClipfuseError(f"unknown dataset {name!r}: expected one of {known}") from None


def find_dataset_root(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of dataset ``name``.

    Each candidate root is tried in order: ``root`` (explicit), ``$CLIPFUSE_DATA``,
    ``<shared>/data`` (:func:`clipfuse.paths.data_roots`), then the download folder
    (:func:`download_root`). A candidate matches when it is itself a folder of the dataset or
    holds one under a conventional name (``camvid``, ``ADEChallengeData2016`` / ``ade20k``,
    ``cityscapes``, ``ccp``, ``labelmefacade``). An explicit ``root`` is the only place searched: a wrong one is an error,
    never a silent fall-back to another copy.
    """
    cls = dataset_class(name)
    names = " or ".join(f"{folder}/" for folder in cls.folder_names)
    if root is not None and not Path(root).expanduser().exists():
        elsewhere = f"; or a folder holding it as {names}" if names else ""
        raise ClipfuseError(
            f"data root {root} does not exist: expected a folder holding {cls.layout} "
            f"(data.dataset={cls.name}{elsewhere})"
        )
    if root is not None:
        bases = [Path(root).expanduser()]
    else:
        bases = list(dict.fromkeys([*data_roots(), download_root()]))
    for base in bases:
        for candidate in [base, *(base / folder for folder in cls.folder_names)]:
            if cls.looks_like(candidate):
                return candidate
    hint = " (`clipfuse data download camvid` fetches it)" if cls is CamVid else ""
    inside = f", or its {names} subfolder" if names else ""
    raise ClipfuseError(
        f"dataset {cls.name} not found{hint}: searched {', '.join(map(str, bases))} (each itself"
        f"{inside}) for {cls.layout}"
    )


def create_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    transform: Transform | None = None,
    **kwargs,
) -> SegmentationDataset:
    """Dataset ``name`` (a :data:`DATASETS` key), split ``split``, found by
    :func:`find_dataset_root`; ``kwargs`` go to the dataset class."""
    cls = dataset_class(name)
    return cls(find_dataset_root(name, root), split=split, transform=transform, **kwargs)


def create_config_dataset(
    config: dict, split: str, transform: Transform | None = None
) -> SegmentationDataset:
    """Split ``split`` of the dataset a run config's ``data`` section names (its dataset,
    root and dataset options), through :func:`create_dataset`; the training split keeps
    ``data.train_images`` of its images (:meth:`SegmentationDataset.keep_images`)."""
    data = config["data"]
    dataset = create_dataset(
        data["dataset"],
        split,
        root=data.get("root"),
        transform=transform,
        **(data.get("dataset_kwargs") or {}),
    )
    if split == "train":
        dataset.keep_images(data.get("train_images"))
    return dataset


def dataset_classes(name: str, root: str | os.PathLike | None = None, **kwargs) -> list[str]:
    """The class names of dataset ``name`` under the dataset options ``kwargs`` (``merge``,
    ``ignore``, ``unseen``): fixed lists need no data on disk, a ``folder`` dataset is read
    (its ``classes.txt``)."""
    names = dataset_class(name).class_names(**kwargs)
    if names is not None:
        return list(names)
    return list(create_dataset(name, "val", root=root, **kwargs).classes)
