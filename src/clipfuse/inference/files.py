"""Predict image and video files into a folder: what ``clipfuse predict`` calls."""

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.fileio import atomic_write, atomic_write_text, prepare_dir
from clipfuse.inference.labels import LabelChoice, LabelsArg
from clipfuse.inference.predict import expand_inputs, read_image
from clipfuse.inference.pretrained import ClipfuseModel
from clipfuse.inference.video import is_video, predict_video

MANIFEST = "classes.json"
COMPARED = {
    "model_sha256": "model",
    "class_names": "class names",
    "palette": "colours",
    "mode": "mode",
}
"""What must match for a run to add to a predictions folder (manifest key: what it is)."""


def describe_predictions(model: ClipfuseModel, choice: LabelChoice, open_vocab: bool) -> dict:
    """What a predictions folder's ``classes.json`` says about its label maps."""
    return {
        "class_names": list(choice.names),
        "palette": model.label_palette(choice).tolist(),
        "mode": model.open_vocab_path if open_vocab else "decoder",
        "model_sha256": model.fingerprint(),
        "model_source": model.source,
    }


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or damaged: it describes nothing
        return {}
    return manifest if isinstance(manifest, dict) else {}


def check_predictions_folder(out: Path, description: dict) -> None:
    """Refuse a folder holding label maps that ``description`` (the new ``classes.json``)
    would describe wrongly: another model's, other labels, colours or mode, or maps without a
    ``classes.json``. Nothing is deleted. Label maps of the same model and labels are added
    to, and that is announced."""
    label_maps = sorted(out.glob("*_labels.png")) + sorted(out.glob("*_labels/*.png"))
    if not label_maps:
        return
    manifest = out / MANIFEST
    old = _read_manifest(manifest)
    differ = [what for key, what in COMPARED.items() if old.get(key) != description[key]]
    where = (
        "choose another --out, or first delete its *_labels.png, *_overlay.png, *_labels/, "
        f"*_overlay.mp4 and {MANIFEST}"
    )
    if not manifest.is_file():
        raise ClipfuseError(
            f"predictions folder {out} holds {len(label_maps)} label map(s) but no {MANIFEST} "
            f"(their classes are unknown), e.g. {label_maps[0].name}: {where}"
        )
    if differ:
        raise ClipfuseError(
            f"predictions folder {out} holds {len(label_maps)} label map(s) of another "
            f"prediction ({', '.join(differ)} {'differs' if len(differ) == 1 else 'differ'} "
            f"from this run's): a new {MANIFEST} would describe them wrongly; {where}"
        )
    announce(
        f"{out} holds {len(label_maps)} prediction(s) of this model and these labels: images "
        "predicted again are replaced, the others are kept"
    )


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def predict_to_folder(
    model: ClipfuseModel,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    labels: LabelsArg = None,
    open_vocab: bool = False,
    batch_size: int = 4,
    progress: bool | None = None,
) -> list[Path]:
    """Segment image files, folders (their images, sorted) and video files into ``out_dir``;
    returns the overlay paths. Per image ``<stem>.<ext>``: ``<stem>_overlay.png`` (colours over
    the image, legend on the right) and ``<stem>_labels.png`` (8-bit indices into
    ``classes.json``'s ``class_names``); per video: :func:`~clipfuse.inference.video.predict_video`;
    a repeated stem gets ``_2``, ``_3``... ``classes.json`` (:func:`describe_predictions`) is
    written just before the first label map, not at all when no input can be read; a folder of
    other predictions is refused (:func:`check_predictions_folder`). A progress bar shows for
    more than one image (unless ``progress`` says otherwise); the last line says the frames per
    second reached. Unreadable inputs are skipped with a message and reported together at the
    end as one :class:`ClipfuseError`; the others are written."""
    if batch_size < 1:
        raise ClipfuseError(f"batch size must be at least 1, got {batch_size}")
    paths = expand_inputs(inputs)
    choice = model.resolve_labels(labels, open_vocab)  # unknown labels fail before any work
    if open_vocab:
        model.embed_labels(choice)  # so do labels the text encoder cannot embed
    out = prepare_dir(out_dir, "output folder")
    description = describe_predictions(model, choice, open_vocab)
    check_predictions_folder(out, description)
    videos = [path for path in paths if is_video(path)]
    images = [path for path in paths if not is_video(path)]
    show = len(images) > 1 if progress is None else progress
    failures: list[str] = []
    written: list[Path] = []
    used: set[str] = set()
    frames, started, in_predict = 0, time.perf_counter(), 0.0

    def describe_once() -> None:  # before the first label map lands
        if not written:
            atomic_write_text(out / MANIFEST, json.dumps(description, indent=2) + "\n")

    with tqdm(total=len(images), desc="predict", unit="image", disable=not show) as bar:
        for start in range(0, len(images), batch_size):
            chunk, arrays = _read_images(images[start : start + batch_size], failures)
            if arrays:
                clock = time.perf_counter()
                results = model.predict(
                    arrays, labels, open_vocab=open_vocab, batch_size=batch_size, scores=False
                )
                in_predict += time.perf_counter() - clock
                for path, result in zip(chunk, results, strict=True):
                    describe_once()
                    stem = _unique_stem(path, used)
                    overlay = out / f"{stem}_overlay.png"
                    atomic_write(overlay, result.overlay.save)
                    atomic_write(out / f"{stem}_labels.png", Image.fromarray(result.label_map).save)
                    written.append(overlay)
                    frames += 1
                    if not show:
                        print(f"{path} -> {overlay}")
            bar.update(len(images[start : start + batch_size]))
    for path in videos:
        try:
            stem = _unique_stem(path, used)
            video = predict_video(
                model, path, out, stem, labels, open_vocab, batch_size, describe_once
            )
        except ClipfuseError as error:
            failures.append(one_line(error))
            print(f"skipped: {one_line(error)}", file=sys.stderr)
            continue
        written.append(video.overlay)
        frames, in_predict = frames + video.frames, in_predict + video.seconds
        print(f"{path} -> {video.overlay} and {video.labels}/ ({video.frames} frames)")
    if show:
        print(f"wrote {len(written)} overlay(s) and label map(s) to {out}")
    if frames:
        print(_speed_line(frames, time.perf_counter() - started, in_predict, model))
    if failures:
        raise ClipfuseError(_unread(failures, len(paths), out))
    return written


def _read_images(paths: Sequence[Path], failures: list[str]) -> tuple[list[Path], list]:
    """The paths that could be read and their RGB arrays; each failure is said on stderr and
    appended to ``failures`` (one line)."""
    read, arrays = [], []
    for path in paths:
        try:
            arrays.append(read_image(path))
            read.append(path)
        except ClipfuseError as error:
            failures.append(one_line(error))
            tqdm.write(f"skipped: {one_line(error)}", file=sys.stderr)
    return read, arrays


def _speed_line(frames: int, seconds: float, in_predict: float, model: ClipfuseModel) -> str:
    """How fast the images or frames went: end to end and in the model's ``predict`` (the
    resizing, the forward passes and the label maps, on the model's device and precision)."""
    return (
        f"{frames} image(s) / frame(s) in {seconds:.1f} s: {frames / seconds:.1f} frames/s end "
        f"to end (reading, predicting, writing); {frames / max(in_predict, 1e-9):.1f} frames/s "
        f"in predict ({model.device.type}, {model.inference_path})"
    )


def _unread(failures: list[str], total: int, out: Path) -> str:
    """The error for ``failures`` (one line each) among ``total`` images, saying what was
    written to ``out`` in words true for every count."""
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    others = total - len(failures)
    if others == 0:
        unread = "the image could not" if total == 1 else f"none of the {total} images could"
        return f"{unread} be read, nothing was written to {out}: {failures[0]}{more}"
    written = "the other one was" if others == 1 else f"the other {others} were"
    return (
        f"{len(failures)} of the {total} images could not be read, {written} written to {out}: "
        f"{failures[0]}{more}"
    )
