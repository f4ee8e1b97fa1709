"""Predict a video file, frame by frame: what ``clipfuse predict`` does with a video input.

Frames are decoded and the overlay video encoded by OpenCV (its FFmpeg back end, part of the
core install). For ``<stem>.<ext>`` the output folder gets ``<stem>_overlay.mp4`` (the labels
blended over each frame, at the video's frame rate; MPEG-4 Part 2, which every OpenCV build
writes) and ``<stem>_labels/`` with one 8-bit label map per frame, ``000000.png`` on, indices
into ``classes.json``'s ``class_names`` as for images. Both are written under temporary names
(``.<stem>_labels.partial/`` is removed by the next run of the same video) and renamed when the
whole video is done, the overlay first: an interrupted run leaves no half video, and a kill
between the two renames leaves the new overlay beside the previous label maps.
"""

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from clipfuse.errors import ClipfuseError
from clipfuse.fileio import atomic_write
from clipfuse.inference.labels import LabelsArg
from clipfuse.inference.pretrained import ClipfuseModel
from clipfuse.inference.visualize import blend

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
FALLBACK_FPS = 25.0
"""The overlay video's frame rate when the input's container gives none or an implausible one
(above :data:`MAX_FPS`)."""
MAX_FPS = 1000.0


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_frames(path: Path, batch_size: int) -> tuple[float, Iterator[list[np.ndarray]]]:
    """The frame rate of the video at ``path`` and a generator of its RGB uint8 frames in lists
    of up to ``batch_size`` (closing it releases the file); a file OpenCV cannot decode is a
    one-line error naming it."""
    if batch_size < 1:
        raise ClipfuseError(f"batch size must be at least 1, got {batch_size}")
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        what = "not found" if not path.exists() else "cannot be read as a video (no frame decoded)"
        raise ClipfuseError(f"video {path}: {what}")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if np.isfinite(fps) and 0 < fps <= MAX_FPS else FALLBACK_FPS

    def batches() -> Iterator[list[np.ndarray]]:
        frame: np.ndarray | None = first
        try:
            while frame is not None:
                chunk = []
                while frame is not None and len(chunk) < batch_size:
                    chunk.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                    ok, frame = capture.read()
                    frame = frame if ok else None
                yield chunk
        finally:
            capture.release()

    return fps, batches()


@dataclass(frozen=True)
class PredictedVideo:
    """What :func:`predict_video` wrote and how long ``model.predict`` took."""

    overlay: Path
    labels: Path
    frames: int
    seconds: float


def predict_video(
    model: ClipfuseModel,
    path: Path,
    out: Path,
    stem: str,
    labels: LabelsArg = None,
    open_vocab: bool = False,
    batch_size: int = 4,
    before_writing: Callable[[], None] = lambda: None,
) -> PredictedVideo:
    """Segment every frame of the video at ``path`` into ``out`` (``<stem>_overlay.mp4`` and
    ``<stem>_labels/``; ``before_writing`` is called once the first frame has decoded, before
    anything is written)."""
    fps, batches = read_frames(path, batch_size)
    with closing(batches):
        before_writing()
        labels_dir = out / f"{stem}_labels"
        partial_dir = out / f".{stem}_labels.partial"
        frames, in_predict = 0, 0.0

        def write(video: Path) -> None:
            nonlocal frames, in_predict
            writer = None
            try:
                for chunk in batches:
                    start = time.perf_counter()
                    results = model.predict(
                        chunk, labels, open_vocab=open_vocab, batch_size=batch_size, scores=False
                    )
                    in_predict += time.perf_counter() - start
                    for frame, result in zip(chunk, results, strict=True):
                        if writer is None:
                            size = frame.shape[1], frame.shape[0]
                            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                            writer = cv2.VideoWriter(str(video), fourcc, fps, size)
                            if not writer.isOpened():
                                raise ClipfuseError(f"video {video}: OpenCV cannot write it")
                        shown = blend(frame, result.label_map, result.palette)
                        writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                        Image.fromarray(result.label_map).save(partial_dir / f"{frames:06d}.png")
                        frames += 1
            finally:
                if writer is not None:
                    writer.release()

        try:
            shutil.rmtree(partial_dir, ignore_errors=True)
            partial_dir.mkdir(parents=True)
            overlay = atomic_write(out / f"{stem}_overlay.mp4", write, "overlay video")
            shutil.rmtree(labels_dir, ignore_errors=True)
            os.replace(partial_dir, labels_dir)
        except OSError as error:
            shutil.rmtree(partial_dir, ignore_errors=True)
            raise ClipfuseError(f"video {path}: could not write its predictions: {error}") from None
        except BaseException:
            shutil.rmtree(partial_dir, ignore_errors=True)
            raise
    return PredictedVideo(overlay, labels_dir, frames, in_predict)
