"""Predict image files into a folder: what ``clipfuse predict`` calls."""

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.fileio import atomic_write, atomic_write_text, prepare_dir
from clipfuse.inference.labels import LabelsArg
from clipfuse.inference.predict import expand_inputs, read_image
from clipfuse.inference.pretrained import ClipfuseModel


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
    """Segment image files and folders (their images, sorted) into ``out_dir``.

    For each image ``<stem>.<ext>``: ``<stem>_overlay.png`` (colours over the image, legend on
    the right) and ``<stem>_labels.png`` (8-bit label indices into ``classes.json``'s
    ``class_names``); a repeated stem gets ``_2``, ``_3``... ``classes.json`` lists the class
    names, their colours and the mode. A progress bar is shown for more than one image (unless
    ``progress`` says otherwise). Unreadable images are skipped with a message and reported
    together at the end as one :class:`ClipfuseError`; the others are written.

    Returns the overlay paths.
    """
    if batch_size < 1:
        raise ClipfuseError(f"batch size must be at least 1, got {batch_size}")
    paths = expand_inputs(inputs)
    choice = model.resolve_labels(labels, open_vocab)  # unknown labels fail before any work
    if open_vocab:
        model.embed_labels(choice)  # so do labels the text encoder cannot embed
    out = prepare_dir(out_dir, "output folder")
    show = len(paths) > 1 if progress is None else progress
    failures: list[str] = []
    written: list[Path] = []
    used: set[str] = set()
    palette = None
    with tqdm(total=len(paths), desc="predict", unit="image", disable=not show) as bar:
        for start in range(0, len(paths), batch_size):
            chunk, images = [], []
            for path in paths[start : start + batch_size]:
                try:
                    images.append(read_image(path))
                    chunk.append(path)
                except ClipfuseError as error:
                    failures.append(one_line(error))
                    tqdm.write(f"skipped: {one_line(error)}", file=sys.stderr)
            if images:
                results = model.predict(
                    images, labels, open_vocab=open_vocab, batch_size=batch_size, scores=False
                )
                for path, result in zip(chunk, results, strict=True):
                    stem = _unique_stem(path, used)
                    overlay = out / f"{stem}_overlay.png"
                    atomic_write(overlay, result.overlay.save)
                    atomic_write(out / f"{stem}_labels.png", Image.fromarray(result.label_map).save)
                    written.append(overlay)
                    palette = result.palette
                    if not show:
                        print(f"{path} -> {overlay}")
            bar.update(len(paths[start : start + batch_size]))
    if palette is not None:
        atomic_write_text(
            out / "classes.json",
            json.dumps(
                {
                    "class_names": list(choice.names),
                    "palette": palette.tolist(),
                    "mode": model.open_vocab_path if open_vocab else "decoder",
                },
                indent=2,
            )
            + "\n",
        )
    if show:
        print(f"wrote {len(written)} overlay(s) and label map(s) to {out}")
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ClipfuseError(
            f"{len(failures)} of {len(paths)} image(s) could not be read, the others were "
            f"written to {out}: {failures[0]}{more}"
        )
    return written
