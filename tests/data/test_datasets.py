"""Each dataset reads its real layout: sample counts, shapes, label mapping, classes, palette."""

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
from PIL import Image

from clipfuse.data import (
    ADE20K,
    IGNORE_INDEX,
    CamVid,
    Cityscapes,
    FolderDataset,
    SegmentationDataset,
    default_palette,
)
from clipfuse.data.ade20k import ADE20K_CLASSES
from clipfuse.data.cityscapes import CITYSCAPES_PALETTE


def check_sample(dataset: SegmentationDataset, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    image, mask = dataset[index]
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(dataset.num_classes)) | {IGNORE_INDEX}
    return image, mask


def test_camvid_resolves_absolute_split_paths_and_maps_void(tmp_path: Path) -> None:
    root = write_camvid(tmp_path / "camvid", {"train": 3, "val": 2, "test": 1})
    train, val, test = (CamVid(root, split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (3, 2, 1)
    assert (
        train.classes[0] == "Sky" and train.classes[-1] == "Bicyclist" and train.num_classes == 11
    )
    assert train.samples[0] == (
        root / "train" / "0001TP_train000.png",
        root / "trainannot" / "0001TP_train000.png",
    )
    image, mask = check_sample(train)
    np.testing.assert_array_equal(image, image_array(0))
    raw = cycling_labels(12)
    assert (mask[raw == 11] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(mask[raw < 11], raw[raw < 11])
    np.testing.assert_array_equal(train.palette, default_palette(11))


def test_camvid_palette_strip(tmp_path: Path) -> None:
    root = write_camvid(tmp_path / "camvid")
    strip = np.zeros((1, 256, 3), dtype=np.uint8)
    strip[0, :12] = [(k * 20, 255 - k, k) for k in range(12)]
    save(root / "palette11.png", strip)
    palette = CamVid(root, "train").palette
    assert palette.shape == (11, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette, strip[0, :11])


def test_ade20k_reduce_zero_label(tmp_path: Path) -> None:
    root = write_ade20k(tmp_path / "ADEChallengeData2016")
    train, val = ADE20K(root, "train"), ADE20K(root, "validation")
    assert (len(train), len(val)) == (2, 1)
    assert train.num_classes == 150 and len(ADE20K_CLASSES) == 150
    assert train.classes[:3] == ("wall", "building", "sky") and train.classes[-1] == "flag"
    assert all(name == name.strip() for name in train.classes)
    _, mask = check_sample(train)
    raw = cycling_labels(151)
    assert (mask[raw == 0] == IGNORE_INDEX).all()
    assert (mask[raw == 1] == 0).all() and (mask[raw == 150] == 149).all()
    np.testing.assert_array_equal(mask[raw > 0], raw[raw > 0] - 1)


def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path / "cityscapes")
    train, val = Cityscapes(root, "train"), Cityscapes(root, "val")
    assert (len(train), len(val)) == (2, 1)
    assert {image.parent.name for image, _ in train.samples} == {"aachen", "bochum"}
    assert train.num_classes == 19 and train.classes[13] == "car"
    np.testing.assert_array_equal(train.palette, CITYSCAPES_PALETTE)
    _, mask = check_sample(train)
    raw = cycling_labels(34)
    expected = {0: 255, 1: 255, 6: 255, 7: 0, 8: 1, 11: 2, 24: 11, 26: 13, 30: 255, 33: 18}
    for label_id, train_id in expected.items():
        assert (mask[raw == label_id] == train_id).all(), label_id
    assert len(set(np.unique(mask)) - {IGNORE_INDEX}) == 19


@pytest.mark.parametrize("flat", [False, True], ids=["split-folders", "split-files"])
def test_folder_layouts(tmp_path: Path, flat: bool) -> None:
    root = write_folder(tmp_path / "mine", ["cat", "dog", "grass"], flat=flat)
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert (len(train), len(val)) == (2, 1)
    assert train.classes == ("cat", "dog", "grass")
    assert [image.name for image, _ in train.samples] == ["a.png", "b.jpg"]
    _, mask = check_sample(train, 1)
    expected = cycling_labels(3)
    expected[0, 0] = 255
    np.testing.assert_array_equal(mask, expected)


def test_transform_receives_numpy_pair(tmp_path: Path) -> None:
    root = write_camvid(tmp_path / "camvid")
    calls = []

    def transform(image: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
        calls.append((image.shape, mask.shape))
        return "image", "mask"

    assert CamVid(root, "train", transform=transform)[1] == ("image", "mask")
    assert calls == [((HEIGHT, WIDTH, 3), (HEIGHT, WIDTH))]


def test_palette_mode_and_16_bit_masks_are_read(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "mine", ["a", "b", "c"])
    mask_path = root / "masks" / "train" / "a.png"
    labels = cycling_labels(3)
    indexed = Image.frombytes("P", (WIDTH, HEIGHT), labels.tobytes())
    indexed.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    indexed.save(mask_path)
    np.testing.assert_array_equal(FolderDataset(root, "train")[0][1], labels)
    Image.fromarray(labels.astype(np.uint16)).save(mask_path)
    assert Image.open(mask_path).mode.startswith("I")
    np.testing.assert_array_equal(FolderDataset(root, "train")[0][1], labels)
