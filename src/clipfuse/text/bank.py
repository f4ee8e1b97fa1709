"""``bank:<path>``: precomputed embeddings looked up by class name (docs/research/method.md Sec. 1).

A bank is ``NAME.npy`` (rows x dim float) with a sibling ``NAME.json`` whose ``classes`` list
names the rows in order (the format of ``shared/text/clip-vitb16/*``); a folder means every
bank in it, merged. A relative path not found from the working directory is tried under the
shared folder (``bank:text/clip-vitb16/ade20k.npy``).

Names match after :func:`~clipfuse.text.base.normalize_name`, on a bank entry's full name or
on the first part of a comma-separated entry ("windowpane, window" answers to "windowpane").
In a folder, files are read in sorted order and the first file holding a name wins. The
embeddings come back exactly as stored (normalised or not, as the bank was made): the
prompts were fixed when the bank was built, so the ``template`` argument is ignored.

The ``.json`` names the CLIP model that made the rows: a ``clip_model`` entry
(``RN50/openai``, open_clip's spelling) or, as in the shared banks, an ``encoder`` entry such
as "OpenAI CLIP RN50 text encoder"; :func:`find_bank` picks a bank by that model.
"""

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipfuse.errors import ClipfuseError
from clipfuse.paths import shared_root
from clipfuse.text.base import TextEncoder, normalize_name


def resolve_bank_path(argument: str) -> Path:
    """The bank file or folder: as given, else relative to the shared folder."""
    path = Path(argument).expanduser()
    if argument and path.exists():
        return path
    if argument and not path.is_absolute() and (shared_root() / path).exists():
        return shared_root() / path
    raise ClipfuseError(
        f"text bank {argument!r}: not found (expected a .npy file with a sibling .json holding "
        f"'classes', or a folder of them; relative paths are also tried under {shared_root()})"
    )


def bank_pairs(path: Path) -> list[tuple[Path, Path]]:
    """The (``.npy``, ``.json``) pairs of a bank file or of every bank in a folder."""
    arrays = sorted(path.glob("*.npy")) if path.is_dir() else [path]
    if not arrays:
        raise ClipfuseError(f"text bank {path}: the folder holds no .npy files")
    pairs = []
    for array in arrays:
        if array.suffix != ".npy":
            raise ClipfuseError(f"text bank {array}: expected a .npy file (or a folder of them)")
        names = array.with_suffix(".json")
        if not names.is_file():
            raise ClipfuseError(
                f"text bank {array}: the sibling {names.name} with 'classes' is missing"
            )
        pairs.append((array, names))
    return pairs


_OPENAI_ENCODER = re.compile(r"OpenAI CLIP (\S+) text encoder")


def _named_clip_model(names_path: Path) -> str | None:
    """The CLIP model a bank's ``.json`` names (open_clip ``<arch>/<tag>``), or None."""
    try:
        meta = json.loads(names_path.read_text())
    except (OSError, ValueError) as error:
        raise ClipfuseError(f"text bank {names_path}: unreadable ({error})") from error
    if isinstance(meta.get("clip_model"), str):
        return meta["clip_model"]
    match = _OPENAI_ENCODER.fullmatch(str(meta.get("encoder", "")))
    return f"{match.group(1).replace('/', '-')}/openai" if match else None


def find_bank(clip_model: str, class_names: Sequence[str], root: Path) -> Path | None:
    """The first folder (sorted) under ``root`` whose banks all name ``clip_model`` and which
    holds every one of ``class_names``; None when there is none."""
    folders = sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
    for folder in folders:
        try:
            if BankEncoder.clip_models(str(folder)) != {clip_model}:
                continue
            BankEncoder(str(folder)).encode(class_names)
        except ClipfuseError:
            continue
        return folder
    return None


def read_bank(array_path: Path, names_path: Path) -> tuple[np.ndarray, list[str]]:
    """The rows of a bank file and its class names (a one-line error for a bad pair)."""
    try:
        array = np.load(array_path, allow_pickle=False)
        classes = json.loads(names_path.read_text()).get("classes")
    except (OSError, ValueError, AttributeError) as error:
        raise ClipfuseError(f"text bank {array_path}: unreadable ({error})") from error
    if array.ndim != 2 or not isinstance(classes, list) or len(classes) != array.shape[0]:
        raise ClipfuseError(
            f"text bank {array_path}: expected a 2-D array with one row per entry of 'classes' "
            f"in {names_path.name}, got shape {array.shape} and "
            f"{len(classes) if isinstance(classes, list) else 'no'} class names"
        )
    return array, [str(name) for name in classes]


class BankEncoder(TextEncoder):
    """Rows of precomputed embedding files, selected by class name."""

    def __init__(self, argument: str) -> None:
        self.path = resolve_bank_path(argument)
        self.spec = f"bank:{argument}"
        arrays: list[np.ndarray] = []
        entries: list[str] = []
        for array_path, names_path in bank_pairs(self.path):
            array, classes = read_bank(array_path, names_path)
            if arrays and array.shape[1] != arrays[0].shape[1]:
                raise ClipfuseError(
                    f"text bank {array_path}: dimension {array.shape[1]} differs from "
                    f"{arrays[0].shape[1]} of the other banks in {self.path}"
                )
            arrays.append(array)
            entries.extend(classes)
        self.table = torch.from_numpy(np.concatenate(arrays).astype(np.float32))
        self.dim = int(self.table.shape[1])
        self.index: dict[str, int] = {}
        for row, entry in enumerate(entries):
            self.index.setdefault(normalize_name(entry), row)
        for row, entry in enumerate(entries):
            self.index.setdefault(normalize_name(entry.split(",")[0]), row)

    @classmethod
    def from_spec(cls, argument: str) -> "BankEncoder":
        return cls(argument)

    @classmethod
    def source_files(cls, argument: str) -> list[Path]:
        """Every ``.npy`` and ``.json`` the bank reads."""
        return [file for pair in bank_pairs(resolve_bank_path(argument)) for file in pair]

    @classmethod
    def clip_models(cls, argument: str) -> set[str]:
        models = (_named_clip_model(names) for _, names in bank_pairs(resolve_bank_path(argument)))
        return {model for model in models if model is not None}

    def _encode(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        rows = [self.index.get(normalize_name(name)) for name in class_names]
        missing = [name for name, row in zip(class_names, rows, strict=True) if row is None]
        if missing:
            raise ClipfuseError(self._missing_message(missing))
        return self.table[rows].clone()

    def _missing_message(self, missing: list[str]) -> str:
        """One line naming the two ways out for names the bank lacks: aliases to bank names,
        or a live encoder (of the bank's own CLIP model where its ``.json`` names it) that
        embeds any name."""
        models = sorted(self.clip_models(str(self.path))) or ["ViT-B-16/openai"]
        name = missing[0]
        example = next(iter(self.index), "a bank name")
        return (
            f"text bank {self.path}: no entry for {', '.join(map(repr, missing))} (names "
            "must match its 'classes' after normalisation): map each to a bank name with "
            f'text.aliases="{{{name!r}: {example!r}}}" (any name it holds), or embed any name '
            "with an open_clip or Hugging Face (hf:<model id>) text encoder, downloaded once "
            f"and cached, e.g. text.encoder=open_clip:{models[0]}"
        )
