"""Dataset names and the search for dataset folders: explicit root, $CLIPFUSE_DATA, shared."""

from pathlib import Path

import numpy as np
import pytest
from data_writers import (
    isolate_data_roots,
    write_ade20k,
    write_camvid,
    write_cityscapes,
    write_folder,
)

from clipfuse.data import DATASETS, CamVid, create_dataset, find_dataset_root
from clipfuse.data.download import ensure_camvid
from clipfuse.errors import ClipfuseError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_data_roots(monkeypatch, tmp_path)


def test_registered_names() -> None:
    assert sorted(DATASETS) == [
        "ade20k", "camvid", "ccp", "cityscapes", "folder", "labelmefacade",
    ]  # fmt: skip


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(
        ClipfuseError,
        match="unknown dataset .pascal.*ade20k, camvid, ccp, cityscapes, folder, labelmefacade",
    ):
        create_dataset("pascal", "train")


def test_root_itself_or_conventional_subfolder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    camvid = write_camvid(data / "camvid")
    ade = write_ade20k(data / "ade20k" / "ADEChallengeData2016")
    cityscapes = write_cityscapes(data / "cityscapes")
    assert find_dataset_root("camvid", data) == camvid
    assert find_dataset_root("CamVid", camvid) == camvid
    assert find_dataset_root("ade20k", data) == ade
    assert find_dataset_root("cityscapes", str(data)) == cityscapes
    other = write_ade20k(tmp_path / "elsewhere" / "ADEChallengeData2016")
    assert find_dataset_root("ade20k", other.parent) == other


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared_camvid = write_camvid(tmp_path / "shared" / "data" / "camvid")
    monkeypatch.setenv("CLIPFUSE_SHARED", str(tmp_path / "shared"))
    assert find_dataset_root("camvid") == shared_camvid
    env_camvid = write_camvid(tmp_path / "env" / "camvid")
    monkeypatch.setenv("CLIPFUSE_DATA", str(tmp_path / "env"))
    assert find_dataset_root("camvid") == env_camvid
    explicit = write_camvid(tmp_path / "explicit" / "CamVid")
    assert find_dataset_root("camvid", tmp_path / "explicit") == explicit
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClipfuseError, match="searched .*empty"):  # no silent fall-back
        find_dataset_root("camvid", empty)


def test_download_folder_is_searched_last(tmp_path: Path) -> None:
    downloaded = write_camvid(tmp_path / "no-cache" / "data" / "camvid")
    assert find_dataset_root("camvid") == downloaded


def test_not_found_lists_places_and_download_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPFUSE_DATA", str(tmp_path / "env"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClipfuseError) as error:
        find_dataset_root("camvid")
    message = str(error.value)
    for place in (
        tmp_path / "env",
        tmp_path / "no-shared" / "data",
        tmp_path / "no-cache" / "data",
    ):
        assert str(place) in message
    assert "clipfuse data download camvid" in message and "\n" not in message
    with pytest.raises(ClipfuseError) as error:
        find_dataset_root("cityscapes")
    assert "leftImg8bit" in str(error.value) and "download" not in str(error.value)


def test_missing_explicit_root_is_an_error(tmp_path: Path) -> None:
    write_camvid(tmp_path / "no-shared" / "data" / "camvid")
    with pytest.raises(ClipfuseError, match="data root .*typo does not exist"):
        find_dataset_root("camvid", tmp_path / "typo")


def test_missing_explicit_root_says_what_the_folder_must_hold(tmp_path: Path) -> None:
    with pytest.raises(ClipfuseError) as error:
        find_dataset_root("folder", tmp_path / "typo")
    message = str(error.value)
    assert "holding folder" not in message  # the dataset's name is no description
    layout = ["<root>/classes.txt", "<root>/images/<split>/", "<root>/masks/<split>/"]
    for part in [*layout, "<root>/splits/<split>.txt", "data.dataset=folder"]:
        assert part in message, (part, message)
    with pytest.raises(ClipfuseError, match=r"<root>/<split>annot/.* as camvid/ or CamVid/"):
        find_dataset_root("camvid", tmp_path / "typo")


def test_build_dataset_passes_split_transform_and_kwargs(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "mine", ["cat", "dog"])
    dataset = create_dataset(
        "folder", "val", root=folder, transform=lambda i, m: (i.shape, m.shape)
    )
    assert len(dataset) == 1 and dataset[0] == ((12, 16, 3), (12, 16))
    camvid = create_dataset("camvid", "val", root=write_camvid(tmp_path / "data" / "camvid").parent)
    assert isinstance(camvid, CamVid) and len(camvid) == 2
    assert isinstance(camvid[0][1], np.ndarray)
    with pytest.raises(TypeError):
        create_dataset("camvid", "val", root=tmp_path / "data", colour="blue")


def test_ensure_camvid_returns_found_folder(tmp_path: Path) -> None:
    camvid = write_camvid(tmp_path / "data" / "camvid")
    url = "http://127.0.0.1:9/never-fetched.zip"
    assert ensure_camvid(tmp_path / "data", url=url) == camvid
    shared = write_camvid(tmp_path / "no-shared" / "data" / "camvid")
    assert ensure_camvid(url=url) == shared
    assert ensure_camvid(tmp_path / "not-yet-created", url=url) == shared


def test_train_images_keeps_one_fixed_nested_subset_of_the_training_split(tmp_path) -> None:
    from helpers import write_folder_dataset

    from clipfuse.config import load_config
    from clipfuse.data import create_config_dataset
    from clipfuse.engine.datamodule import SegmentationDataModule

    root = write_folder_dataset(tmp_path / "twelve", per_split=12)

    def config(count):
        return load_config(None, ["data.dataset=folder", f"data.root={root}", *count])

    def kept(count: int) -> list[str]:
        dataset = create_config_dataset(config([f"data.train_images={count}"]), "train")
        return [image.name for image, _ in dataset.samples]

    few, more = kept(3), kept(7)
    assert len(few) == 3 and len(more) == 7 and set(few) < set(more)
    assert few == sorted(few) and len(kept(12)) == 12
    assert len(create_config_dataset(config(["data.train_images=3"]), "val")) == 12
    module = SegmentationDataModule("folder", (0, 0, 0), (1, 1, 1), root=str(root), train_images=3)
    assert [image.name for image, _ in module.dataset("train", train=True).samples] == few
    with pytest.raises(ClipfuseError, match="data.train_images is 13: expected 1 to 12"):
        kept(13)
