"""``clipfuse predict`` on a video file: an overlay video and a label map per frame, the same
labels as the decoded frames predicted as images, frames/s reported; bad videos are one line."""

import cv2
import numpy as np
from PIL import Image

from clipfuse.cli import main
from clipfuse.inference.video import read_frames

FRAMES = 5


def write_video(path, frames: int = FRAMES, size=(40, 48), fps: float = 10.0) -> None:
    """A small MPEG-4 video of moving colour bands (``size``: H, W)."""
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for index in range(frames):
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        frame[: height // 2] = (200, 120, 40)
        frame[height // 2 :, (index * 8) % width :] = (60, 60, 60)
        writer.write(frame)
    writer.release()


def test_a_video_gets_an_overlay_video_and_a_label_map_per_frame(tiny_run, tmp_path, capsys):
    video = tmp_path / "street.mp4"
    write_video(video)
    out = tmp_path / "out"
    args = ["predict", str(video), "--model", str(tiny_run.pretrained), "--out", str(out)]
    assert main([*args, "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"({FRAMES} frames)" in printed
    speed = printed.strip().splitlines()[-1]
    assert speed.startswith(f"{FRAMES} image(s) / frame(s) in ") and "frames/s in predict" in speed
    assert "(cpu, eager-fp32" in speed

    label_maps = sorted((out / "street_labels").iterdir())
    assert [p.name for p in label_maps] == [f"{i:06d}.png" for i in range(FRAMES)]
    fps, batches = read_frames(out / "street_overlay.mp4", batch_size=FRAMES)
    overlay_frames = [frame for batch in batches for frame in batch]
    assert len(overlay_frames) == FRAMES and overlay_frames[0].shape == (40, 48, 3)
    assert fps == 10.0
    assert not list(out.glob(".*"))  # no temporary file or folder left

    # the frames, decoded and predicted as images, get the same labels
    _, batches = read_frames(video, batch_size=FRAMES)
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, frame in enumerate(next(batches)):
        Image.fromarray(frame).save(frames / f"{index:06d}.png")
    images_out = tmp_path / "images_out"
    assert (
        main(
            ["predict", str(frames), "--model", str(tiny_run.pretrained), "--out", str(images_out)]
        )
        == 0
    )
    for index, path in enumerate(label_maps):
        expected = np.asarray(Image.open(images_out / f"{index:06d}_labels.png"))
        assert np.array_equal(np.asarray(Image.open(path)), expected)


def test_an_unreadable_video_is_one_line_and_the_images_are_still_written(
    tiny_run, tmp_path, capsys
):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    out = tmp_path / "out"
    image = str(tiny_run.val_images[0])
    code = main(
        ["predict", image, str(broken), "--model", str(tiny_run.pretrained), "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith("error: 1 of the 2 images could not be read")
    assert f"video {broken}: cannot be read as a video" in err[-1]
    assert (out / f"{tiny_run.val_images[0].stem}_labels.png").is_file()
    assert not (out / "broken_labels").exists() and not (out / "broken_overlay.mp4").exists()


def test_a_run_that_decodes_no_video_writes_nothing(tiny_run, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    assert main(["predict", str(broken), "--model", str(tiny_run.pretrained), "--out", str(out)])
    assert "nothing was written" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_another_models_video_label_maps_are_refused(tiny_run, tmp_path, capsys):
    video = tmp_path / "street.mp4"
    write_video(video, frames=2)
    out = tmp_path / "out"
    args = ["predict", str(video), "--model", str(tiny_run.pretrained), "--out", str(out)]
    assert main(args) == 0
    manifest = out / "classes.json"
    manifest.write_text(manifest.read_text().replace('"decoder"', '"score_map"'))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds 2 label map(s) of another prediction" in err and "*_labels/" in err
