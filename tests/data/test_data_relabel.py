"""Named folder datasets (ccp, labelmefacade) and the merge / ignore / unseen relabelling."""

import numpy as np
import pytest
from data_writers import cycling_labels, isolate_data_roots, write_folder

from clipfuse import ClipfuseError
from clipfuse.data import (
    CCP,
    FolderDataset,
    LabelMeFacade,
    class_image_counts,
    create_dataset,
    dataset_classes,
)
from clipfuse.data.ccp import CCP_CLASSES
from clipfuse.data.labelmefacade import LABELMEFACADE_CLASSES
from clipfuse.data.relabel import relabel

CLASSES = ["null", "coat", "jacket", "heels", "shoes", "blazer"]


def test_relabel_table():
    relabeled = relabel(CLASSES, merge={"heels": "shoes"}, ignore=["null"], unseen=["Blazer"])
    assert relabeled.classes == ("coat", "jacket", "shoes")
    assert relabeled.unseen == ("blazer",)
    raw = np.array([0, 1, 2, 3, 4, 5, 255, 6], dtype=np.uint8)
    # null and blazer -> 255; heels -> shoes' id; raw 6 (no class) -> 3, an invalid id
    assert relabeled(raw).tolist() == [255, 0, 1, 2, 2, 255, 255, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ignore": ["hat"]}, "ignore names 'hat'"),
        ({"merge": {"heels": "sandals"}}, "merge names 'sandals'"),
        ({"merge": {"heels": "shoes"}, "ignore": ["shoes"]}, "itself merged, ignored or unseen"),
        ({"ignore": ["coat"], "unseen": ["coat"]}, "coat named more than once"),
        ({"ignore": CLASSES}, "leave no class"),
        ({"unseen": "coat"}, "expected a list of class names"),
        ({"merge": ["heels"]}, "expected a mapping"),
    ],
)
def test_relabel_errors(kwargs, message):
    with pytest.raises(ClipfuseError, match=message):
        relabel(CLASSES, **kwargs)


def test_folder_dataset_relabels_masks_and_classes(tmp_path):
    root = write_folder(tmp_path / "data", CLASSES)
    dataset = FolderDataset(root, "train", merge={"heels": "shoes"}, unseen=["blazer"])
    assert dataset.classes == ("null", "coat", "jacket", "shoes")
    assert dataset.raw_classes == tuple(CLASSES) and dataset.unseen == ("blazer",)
    _, mask = dataset[0]
    raw = cycling_labels(len(CLASSES))
    assert (mask[raw == 3] == 3).all() and (mask[raw == 4] == 3).all()  # heels -> shoes
    assert (mask[raw == 5] == 255).all() and mask[0, 0] == 255  # unseen blazer, raw 255
    assert (mask[raw == 1] == 1).all()
    kwargs = {"merge": {"heels": "shoes"}, "unseen": ["blazer"]}
    assert dataset_classes("folder", root=root, **kwargs) == list(dataset.classes)
    counts = class_image_counts(dataset)
    assert counts == {"null": 2, "coat": 2, "jacket": 2, "shoes": 2}


@pytest.mark.parametrize(
    ("name", "cls", "classes"),
    [("ccp", CCP, CCP_CLASSES), ("labelmefacade", LabelMeFacade, LABELMEFACADE_CLASSES)],
)
def test_named_folder_datasets(tmp_path, monkeypatch, name, cls, classes):
    isolate_data_roots(monkeypatch, tmp_path)
    shared = tmp_path / "no-shared"
    write_folder(shared / "data" / name, list(classes))
    dataset = create_dataset(name, "train")  # found under <shared>/data/<name>
    assert isinstance(dataset, cls) and dataset.classes == classes and len(dataset) == 2
    assert dataset_classes(name) == list(classes)  # known without reading the folder
    ignored = dataset_classes(name, ignore=[classes[0]])
    assert ignored == list(classes[1:])
    # the same folder still reads as a plain folder dataset
    assert FolderDataset(shared / "data" / name, "val").classes == classes


def test_named_dataset_refuses_another_class_list(tmp_path, monkeypatch):
    isolate_data_roots(monkeypatch, tmp_path)
    root = write_folder(tmp_path / "other", ["sky", "road"])
    with pytest.raises(ClipfuseError, match="does not list the 59 classes of ccp"):
        CCP(root, "train")
    with pytest.raises(ClipfuseError, match="dataset ccp not found"):
        create_dataset("ccp", "train", root=tmp_path)  # a folder dataset, but not CCP's
