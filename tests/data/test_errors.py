"""Bad data raises one-line ClipfuseErrors that name the file and what was expected."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_writers import (
    HEIGHT,
    WIDTH,
    cycling_labels,
    image_array,
    save,
    write_ade20k,
    write_camvid,
    write_cityscapes,
    write_folder,
)
from helpers import refused, save_png

from clipfuse.data import ADE20K, CamVid, Cityscapes, FolderDataset, SegmentationDataset
from clipfuse.errors import ClipfuseError


def assert_message(error: pytest.ExceptionInfo, *fragments: str) -> None:
    """One line holding every fragment."""
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("cls", [CamVid, ADE20K, Cityscapes, FolderDataset])
def test_missing_root(tmp_path: Path, cls: type[SegmentationDataset]) -> None:
    with pytest.raises(ClipfuseError) as error:
        cls(tmp_path / "nowhere", "train")
    assert_message(error, str(tmp_path / "nowhere"), "expected", "<root>/")


def test_missing_split(tmp_path: Path) -> None:
    camvid = write_camvid(tmp_path / "camvid")
    with pytest.raises(ClipfuseError) as error:
        CamVid(camvid, "test")
    assert_message(error, str(camvid / "test.txt"), "IMAGE LABEL")
    with pytest.raises(ClipfuseError) as error:
        ADE20K(write_ade20k(tmp_path / "ade"), "test")
    assert_message(error, "'test'", "train or val")
    cityscapes = write_cityscapes(tmp_path / "cityscapes")
    with pytest.raises(ClipfuseError) as error:
        Cityscapes(cityscapes, "test")
    assert_message(error, str(cityscapes / "leftImg8bit" / "test"), "_leftImg8bit.png")
    folder = write_folder(tmp_path / "mine", ["a", "b"])
    with pytest.raises(ClipfuseError) as error:
        FolderDataset(folder, "test")
    assert_message(error, str(folder / "images" / "test"), str(folder / "splits" / "test.txt"))


def test_empty_split_folder(tmp_path: Path) -> None:
    root = write_ade20k(tmp_path / "ade", {"training": 1})
    (root / "images" / "validation").mkdir()
    (root / "annotations" / "validation").mkdir()
    with pytest.raises(ClipfuseError) as error:
        ADE20K(root, "val")
    assert_message(error, str(root / "images" / "validation"), "holds no ade20k samples")


def test_split_file_naming_a_missing_file(tmp_path: Path) -> None:
    root = write_camvid(tmp_path / "camvid")
    (root / "trainannot" / "0001TP_train001.png").unlink()
    with pytest.raises(ClipfuseError) as error:
        CamVid(root, "train")
    assert_message(error, "train.txt line 2", str(root / "trainannot" / "0001TP_train001.png"))
    (root / "val.txt").write_text("/SegNet/CamVid/val/only-one-field.png\n")
    with pytest.raises(ClipfuseError) as error:
        CamVid(root, "val")
    assert_message(error, "val.txt line 1", "'IMAGE LABEL'")


def test_image_or_label_without_partner(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "mine", ["a", "b"])
    (folder / "masks" / "train" / "b.png").unlink()
    with pytest.raises(ClipfuseError) as error:
        FolderDataset(folder, "train")
    assert_message(error, str(folder / "images" / "train" / "b.jpg"), "no mask", "b.png")
    flat = write_folder(tmp_path / "flat", ["a", "b"], flat=True)
    (flat / "splits" / "val.txt").write_text("c\nmissing\n")
    with pytest.raises(ClipfuseError) as error:
        FolderDataset(flat, "val")
    assert_message(error, "val.txt line 2", "'missing'")
    cityscapes = write_cityscapes(tmp_path / "cityscapes")
    label = next((cityscapes / "gtFine" / "val").glob("*/*_labelIds.png"))
    label.unlink()
    with pytest.raises(ClipfuseError) as error:
        Cityscapes(cityscapes, "val")
    assert_message(error, "_leftImg8bit.png", str(label))
    ade = write_ade20k(tmp_path / "ade")
    annotation = next((ade / "annotations" / "training").glob("*.png"))
    annotation.unlink()
    with pytest.raises(ClipfuseError) as error:
        ADE20K(ade, "train")
    assert_message(error, str(annotation))


def test_corrupt_truncated_or_missing_image(tmp_path: Path) -> None:
    root = write_camvid(tmp_path / "camvid")
    dataset = CamVid(root, "train")
    image, mask = dataset.samples[0]
    png = image.read_bytes()
    image.write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    with pytest.raises(ClipfuseError) as error:
        dataset[0]
    assert_message(error, f"image {image}", "could not be read", "expected")
    image.write_bytes(png[: len(png) // 2])
    with pytest.raises(ClipfuseError) as error:
        dataset[0]
    assert_message(error, f"image {image}", "could not be read")
    image.unlink()
    with pytest.raises(ClipfuseError) as error:
        dataset[0]
    assert_message(error, f"image {image}", "not found")


def test_corrupt_mask(tmp_path: Path) -> None:
    dataset = CamVid(write_camvid(tmp_path / "camvid"), "train")
    mask = dataset.samples[1][1]
    mask.write_bytes(b"garbage")
    with pytest.raises(ClipfuseError) as error:
        dataset[1]
    assert_message(error, f"mask {mask}", "could not be read", "single-channel")


def test_mask_size_mismatch(tmp_path: Path) -> None:
    root = write_camvid(tmp_path / "camvid")
    dataset = CamVid(root, "val")
    image, mask = dataset.samples[1]
    save(mask, np.zeros((HEIGHT + 2, WIDTH - 1), dtype=np.uint8))
    with pytest.raises(ClipfuseError) as error:
        dataset[1]
    assert_message(
        error, f"mask {mask} is {WIDTH - 1}x{HEIGHT + 2} but image {image} is {WIDTH}x{HEIGHT}"
    )


def test_rgb_mask(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "mine", ["a", "b"])
    dataset = FolderDataset(root, "val")
    mask = dataset.samples[0][1]
    save(mask, image_array(3))
    with pytest.raises(ClipfuseError) as error:
        dataset[0]
    assert_message(error, f"mask {mask}", "mode RGB", "single-channel")


def test_unknown_label_values(tmp_path: Path) -> None:
    camvid = CamVid(write_camvid(tmp_path / "camvid"), "train")
    mask = camvid.samples[2][1]
    labels = cycling_labels(12)
    labels[3, 4], labels[5, 6] = 12, 200
    save(mask, labels)
    with pytest.raises(ClipfuseError) as error:
        camvid[2]
    assert_message(error, f"mask {mask}", "[12, 200]", "0..10", "255")
    ade = ADE20K(write_ade20k(tmp_path / "ade"), "val")
    mask = ade.samples[0][1]
    labels = cycling_labels(151)
    labels[0, 1] = 160
    save(mask, labels)
    with pytest.raises(ClipfuseError) as error:
        ade[0]
    assert_message(error, f"mask {mask}", "[159]", "raw values [160]", "0..149")
    root = write_folder(tmp_path / "mine", ["a", "b", "c"])
    mask = FolderDataset(root, "val").samples[0][1]
    save(mask, np.full((HEIGHT, WIDTH), 9, dtype=np.uint8))
    for options in ({}, {"merge": {"c": "a"}}):  # no mapping of values, or classes merged
        with pytest.raises(ClipfuseError) as error:
            FolderDataset(root, "val", **options)[0]
        assert_message(
            error,
            f"mask {mask} has values [9]: expected 0..2 (the 3 classes of {root / 'classes.txt'})"
            " or 255 (ignore)",
        )
        assert "label values" not in str(error.value)  # was: label values [3] (raw values [9])


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        ("", ["is empty"]),
        ("cat\n\ndog\n", ["class 1", "''", "non-empty"]),
        ("   \ncat\n", ["class 0", "non-empty"]),
        ("cat\ndog\ncat\n", ["repeats 'cat'", "unique"]),
        ("sky\nroad\nSky\n", ["('sky' and 'Sky')", "differ only in case"]),
        (
            "Traffic light\ncar\ntraffic_light\nCAR\n",
            ["'Traffic light' and 'traffic_light'; 'car' and 'CAR'"],
        ),
    ],
    ids=["empty-file", "empty-line", "blank-name", "duplicate", "case", "case-and-separators"],
)
def test_bad_class_lists(tmp_path: Path, lines: str, fragments: list[str]) -> None:
    root = write_folder(tmp_path / "mine", ["a", "b"])
    (root / "classes.txt").write_text(lines)
    with pytest.raises(ClipfuseError) as error:
        FolderDataset(root, "train")
    assert_message(error, str(root / "classes.txt"), *fragments)


def test_missing_class_file(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "mine", ["a", "b"])
    (root / "classes.txt").unlink()
    with pytest.raises(ClipfuseError) as error:
        FolderDataset(root, "train")
    assert_message(error, str(root / "classes.txt"), "not found")


def test_base_class_validation(tmp_path: Path) -> None:
    pair = [(tmp_path / "x.png", tmp_path / "y.png")]
    with pytest.raises(ClipfuseError, match="expected at most 255"):
        SegmentationDataset(pair, [f"c{k}" for k in range(256)])
    with pytest.raises(ClipfuseError, match=r"shape \(2, 4\): expected \(2, 3\)"):
        SegmentationDataset(pair, ["a", "b"], palette=np.zeros((2, 4), dtype=np.uint8))
    with pytest.raises(ClipfuseError, match="holds no segmentation samples"):
        SegmentationDataset([], ["a", "b"], where=tmp_path)


def test_every_bad_file_is_listed_before_training(world, tmp_path, capsys):
    data = Path(shutil.copytree(world.data, tmp_path / "data"))
    train_images, train_masks = data / "images" / "train", data / "masks" / "train"
    (train_images / "001.png").write_bytes(b"not a png")
    save_png(train_masks / "002.png", np.zeros((40, 48, 3), np.uint8))  # RGB, not labels
    save_png(train_masks / "003.png", np.zeros((10, 10), np.uint8))  # wrong size
    out = tmp_path / "run"
    refused(
        capsys,
        ["train", "--config", str(world.config), "--out", str(out), f"data.root={data}"],
        "3 of 4 samples are bad",
        "001.png could not be read",
        "002.png has mode RGB",
        "003.png is 10x10",
    )
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()


def test_a_mask_without_an_image_is_an_error(world, tmp_path, capsys):
    data = Path(shutil.copytree(world.data, tmp_path / "data"))
    save_png(data / "masks" / "train" / "999.png", np.zeros((40, 48), np.uint8))
    refused(
        capsys,
        ["train", "--config", str(world.config), "--out", str(tmp_path / "r"), f"data.root={data}"],
        "999.png has no image",
    )
