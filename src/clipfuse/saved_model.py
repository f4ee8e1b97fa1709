"""The saved-model format: what a trained model is saved as, at which version, and how it is
written and read back (with one-line errors, without unpickling anything).

A trained model is saved in one of two forms:

* a training checkpoint (``.ckpt``, written by ``clipfuse train`` through Lightning, its
  ``clipfuse`` entry from :func:`checkpoint_meta`): read with ``torch.load(weights_only=True)``
  only, so a file holding anything other than tensors and plain data is refused; its
  ``clipfuse`` entry holds the run config, the class names and the format version;
* a pretrained folder (written by :func:`write_pretrained`, through
  :meth:`clipfuse.inference.ClipfuseModel.save_pretrained`; while a save replaces its files,
  ``.clipfuse-previous/`` keeps the pair it replaces):

  * ``model.safetensors``: the network's ``state_dict`` (the class-name text embeddings are
    the buffer ``head.text_embeddings``), tensors only;
  * ``config.json`` (:func:`pretrained_config`): ``format`` (``"clipfuse-pretrained"``),
    ``format_version``, ``save_id`` (also in the weights' metadata: the two files are one
    save), ``method``, ``backbone``, ``decoder``, ``class_names``, ``text`` (encoder spec,
    template, aliases), ``normalization`` (mean / std, 0-255 units), ``palette``, and
    ``config``: the full run config the model was trained with;
  * ``README.md``: its model card (:func:`clipfuse.hub.model_card`), for the Hugging Face Hub.

Both carry :data:`clipfuse.config.FORMAT_VERSION`; their config is read back with
:func:`clipfuse.config.with_defaults` (upgraded to today's keys by
:func:`clipfuse.config.upgrade_config`, every key validated). The version and its upgrades
live in :mod:`clipfuse.config` because run folders' ``config.yaml`` share them.
Lightning-free: loading a model for inference does not import the training engine.
"""

import json
import os
import pickle
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clipfuse.config import FORMAT_VERSION, with_defaults
from clipfuse.data.base import validate_classes
from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.fileio import atomic_write_all, fsync, prepare_dir, remove_partial_files

CHECKPOINT_KEY = "clipfuse"
# Where Lightning's weight averaging (train.ema_decay) keeps the trained weights beside the average.
TRAINED_STATE_KEY = "current_model_state"
PRETRAINED_FORMAT = "clipfuse-pretrained"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
SAVE_ID = "save_id"  # in both files of a pretrained folder: they were written together
# While save_pretrained replaces a folder's pair: hard links to the pair it replaces.
PREVIOUS_DIR = ".clipfuse-previous"
_EXPECTED = "expected a .ckpt written by clipfuse train"


def _read_error(path: Path, error: Exception) -> ClipfuseError:
    """Why ``torch.load`` could not read ``path``, in one line and without torch's advice to
    retry with ``weights_only=False`` (wrong for random bytes, unsafe for a hostile file)."""
    size = path.stat().st_size
    if size == 0:
        return ClipfuseError(f"checkpoint {path} is empty (0 bytes): {_EXPECTED}")
    with path.open("rb") as file:
        zip_magic = file.read(4) == b"PK\x03\x04"
    if zip_magic and not zipfile.is_zipfile(path):
        return ClipfuseError(
            f"checkpoint {path} is truncated or damaged ({size:,} bytes, an incomplete archive): "
            f"{_EXPECTED}; was it copied or written completely?"
        )
    if isinstance(error, pickle.UnpicklingError) and zip_magic:
        return ClipfuseError(
            f"checkpoint {path} holds Python objects other than tensors and plain data: "
            "refused (loading it could run code; clipfuse checkpoints hold only those)"
        )
    return ClipfuseError(f"checkpoint {path} is not a PyTorch checkpoint: {_EXPECTED}")


def torch_load(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with one-line errors; ``mmap``: tensors
    are mapped from the file, not read."""
    path = Path(path)
    if not path.is_file():
        raise ClipfuseError(f"checkpoint {path} not found: {_EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        raise _read_error(path, error) from error


def check_format_version(source: str, version: Any) -> None:
    """Refuse a format version (of ``source``, in the message) this clipfuse cannot read."""
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ClipfuseError(
            f"{source} has format version {version!r}; this clipfuse reads versions 1 "
            f"to {FORMAT_VERSION} (a newer clipfuse wrote it? upgrade clipfuse)"
        )


def check_checkpoint(path: Path, checkpoint: Any) -> None:
    """Refuse ``checkpoint`` (read from ``path``) unless it is a clipfuse checkpoint of a
    format version this clipfuse reads."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CHECKPOINT_KEY), dict):
        raise ClipfuseError(
            f"checkpoint {path} was not written by clipfuse (no '{CHECKPOINT_KEY}' entry)"
        )
    meta = checkpoint[CHECKPOINT_KEY]
    check_format_version(f"checkpoint {path}", meta.get("format_version", 1))
    missing = [key for key in ("config", "class_names") if key not in meta]
    if "state_dict" not in checkpoint:
        missing.append("state_dict")
    if missing:
        raise ClipfuseError(f"checkpoint {path} lacks {', '.join(missing)}: {_EXPECTED}")
    validate_classes(meta["class_names"], f"checkpoint {path}")


def checkpoint_meta(config: dict, class_names: list[str]) -> dict:
    """The ``clipfuse`` entry a training checkpoint carries."""
    return {"config": config, "class_names": class_names, "format_version": FORMAT_VERSION}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The whole checkpoint dict (tensors on the CPU), checked by :func:`check_checkpoint`."""
    checkpoint = torch_load(path)
    check_checkpoint(Path(path), checkpoint)
    return checkpoint


def checkpoint_version(path: str | os.PathLike) -> int:
    """The format version of the clipfuse checkpoint at ``path`` (checked by
    :func:`check_checkpoint`), read without reading its tensors."""
    checkpoint = torch_load(path, mmap=True)
    check_checkpoint(Path(path), checkpoint)
    return checkpoint[CHECKPOINT_KEY].get("format_version", 1)


def load_checkpoint(
    path: str | os.PathLike, trained: bool = False
) -> tuple[dict, list[str], dict[str, torch.Tensor]]:
    """``(config, class_names, model_state_dict)`` of a clipfuse training checkpoint
    (``trained``: see :func:`unpack_checkpoint`)."""
    return unpack_checkpoint(read_checkpoint(path), trained)


def unpack_checkpoint(
    checkpoint: dict, trained: bool = False
) -> tuple[dict, list[str], dict[str, torch.Tensor]]:
    """``(config, class_names, model_state_dict)`` of a checkpoint from
    :func:`read_checkpoint`; the config upgraded to today's keys. The state is the one the
    checkpoint serves (a ``train.ema_decay`` run's: the average); ``trained``: the trained
    weights the average was taken of (``current_model_state``), which are the served ones of a
    run without the average."""
    meta = checkpoint[CHECKPOINT_KEY]
    config = with_defaults(meta["config"], meta.get("format_version", 1))
    served = checkpoint["state_dict"]
    state = {
        key.removeprefix("model."): value
        for key, value in (checkpoint.get(TRAINED_STATE_KEY, served) if trained else served).items()
        if key.startswith("model.")
    }
    return config, list(meta["class_names"]), state


def pretrained_config(
    config: dict, class_names: list[str], mean: tuple, std: tuple, palette: np.ndarray
) -> dict:
    """What a pretrained folder's ``config.json`` holds (see the module docstring), but its
    ``save_id``."""
    import timm

    import clipfuse

    model, text = config["model"], config["text"]
    return {
        "format": PRETRAINED_FORMAT,
        "format_version": FORMAT_VERSION,
        "clipfuse_version": clipfuse.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "timm_version": timm.__version__,
        "method": model["method"],
        "backbone": model["backbone"],
        "decoder": model["decoder"],
        "class_names": class_names,
        "text": {
            "encoder": text["encoder"],
            "fallback": text["fallback"],
            "template": text["template"],
            "aliases": dict(text["aliases"] or {}),
        },
        "normalization": {"mean": list(mean), "std": list(std), "units": "0-255"},
        "palette": palette.tolist(),
        "config": config,
    }


def write_pretrained(
    directory: str | os.PathLike,
    state: dict[str, torch.Tensor],
    meta: dict,
    card: str | None = None,
) -> Path:
    """Write ``state`` to ``model.safetensors``, ``meta`` (:func:`pretrained_config`) to
    ``config.json`` and ``card`` (when given) to ``README.md`` in ``directory`` (created; other
    files there are kept), so that at every instant of the save, also when the process is
    killed, :func:`read_pretrained` reads either the complete old model or the complete new
    one (the card, renamed last, describes the new model once that is complete):

    1. both files are written to hidden temporary files beside their targets (the slow part);
       they share a new ``save_id``;
    2. the folder's current pair, when it is complete (both files there, of one save), is
       hard-linked (copied where the file system has no hard links) into
       ``.clipfuse-previous/``, replacing what that held, and flushed to disk;
    3. the temporary files are renamed over ``model.safetensors``, then over ``config.json``
       (then ``README.md``);
    4. ``.clipfuse-previous/`` is deleted.

    Killed before the first rename, the folder holds the old pair; after the second, the new
    one; between the two, the new weights beside the old config, which share no ``save_id``:
    :func:`read_pretrained` then reads the old pair from ``.clipfuse-previous/``. A folder whose
    pair is not complete when a save starts (one killed between its renames) keeps its
    ``.clipfuse-previous/``: that is still the last complete model. The next save removes a
    killed save's temporary files.

    Why not write a complete new folder and rename it into place: the two files stay at the
    folder's top level, the layout the Hugging Face Hub and other tools read, with no symlink
    or versioned subfolder; the folder itself (other files in it, its permissions, a symlink
    to it or a mount point) stays as it is, and its parent need not be writable; and keeping
    the old pair costs two hard links, not a copy of the weights.
    """
    from safetensors.torch import save_file

    directory = prepare_dir(directory, "model folder")
    for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
        remove_partial_files(directory, name)
    save_id = uuid.uuid4().hex
    metadata = {
        "format": PRETRAINED_FORMAT,
        "format_version": str(FORMAT_VERSION),
        SAVE_ID: save_id,
    }
    config = json.dumps({**meta, SAVE_ID: save_id}, indent=2) + "\n"
    writes = {
        directory / WEIGHTS_FILE: lambda path: save_file(state, path, metadata=metadata),
        directory / CONFIG_FILE: lambda path: path.write_text(config, encoding="utf-8"),
    }
    if card is not None:
        writes[directory / CARD_FILE] = lambda path: path.write_text(card, encoding="utf-8")
    atomic_write_all(
        writes,
        "model file",
        before_replace=lambda: _keep_previous(directory),
    )
    # Should it stay (a kill, a folder it cannot delete), it is read only while the folder's
    # pair is mixed, and the next save replaces it.
    shutil.rmtree(directory / PREVIOUS_DIR, ignore_errors=True)
    return directory


def _keep_previous(directory: Path) -> None:
    """Step 2 of :func:`write_pretrained`: hard links to ``directory``'s complete pair in
    ``.clipfuse-previous/``; nothing when the pair is not complete (that folder then holds the
    last complete one)."""
    if not _complete_pair(directory):
        return
    previous = directory / PREVIOUS_DIR
    if previous.exists():
        shutil.rmtree(previous)
    previous.mkdir()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        try:
            os.link(directory / name, previous / name)
        except OSError:  # a file system without hard links
            shutil.copyfile(directory / name, previous / name)
            fsync(previous / name)
    fsync(previous)
    fsync(directory)


def _complete_pair(directory: Path) -> bool:
    """Whether ``directory`` holds both files of a pretrained folder and they come from one
    save: equal ``save_id`` (both absent in a folder saved before save ids), read without the
    tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        with safe_open(directory / WEIGHTS_FILE, "pt") as weights:
            weights_id = (weights.metadata() or {}).get(SAVE_ID)
    except (OSError, UnicodeDecodeError, ValueError, SafetensorError):
        return False
    return isinstance(config, dict) and config.get(SAVE_ID) == weights_id


class _MixedSaves(ClipfuseError):
    """A pretrained folder's weights and config come from different saves."""


def read_pretrained(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(meta, state_dict)`` of a pretrained folder; ``meta`` is its ``config.json`` with
    ``config`` upgraded and completed (:func:`clipfuse.config.with_defaults`).

    A folder whose weights and config come from different saves is refused, unless a save
    killed between its two renames left the pair it was replacing in ``.clipfuse-previous/``
    (:func:`write_pretrained`): that complete pair is read instead, announced."""
    directory = Path(directory)
    try:
        return _read_pair(directory)
    except _MixedSaves:
        previous = directory / PREVIOUS_DIR
        if not _complete_pair(previous):
            raise
        announce(
            f"{directory}: a save_pretrained was interrupted ({WEIGHTS_FILE} and {CONFIG_FILE} "
            f"come from different saves): reading the model saved before it, kept in "
            f"{previous}; save the model again to complete the folder"
        )
        return _read_pair(previous)


def _read_pair(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """:func:`read_pretrained` of the pair in ``directory`` alone."""
    from safetensors import SafetensorError, safe_open

    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    expected = f"expected {CONFIG_FILE} and {WEIGHTS_FILE} written by save_pretrained"
    if not config_path.is_file():
        raise ClipfuseError(
            f"{directory} is not a clipfuse model folder: no {CONFIG_FILE} ({expected})"
        )
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipfuseError(f"{config_path} is not valid JSON ({expected})") from error
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        raise ClipfuseError(
            f"{config_path} is not a clipfuse model config (no format {PRETRAINED_FORMAT!r})"
        )
    version = meta.get("format_version")
    check_format_version(str(config_path), version)
    missing = [key for key in ("config", "class_names") if not meta.get(key)]
    if missing:
        raise ClipfuseError(f"{config_path} lacks {', '.join(missing)}")
    validate_classes(meta["class_names"], str(config_path))
    try:
        meta = {**meta, "config": with_defaults(meta["config"], version)}
    except ClipfuseError as error:
        raise ClipfuseError(f"{config_path}: {one_line(error)}") from error
    if not weights_path.is_file():
        raise ClipfuseError(f"{directory} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
    try:
        with safe_open(weights_path, "pt") as weights:
            weights_id = (weights.metadata() or {}).get(SAVE_ID)
            state = {key: weights.get_tensor(key) for key in weights.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ClipfuseError(
            f"{weights_path} could not be read as safetensors: {one_line(error)}"
        ) from error
    if weights_id != meta.get(SAVE_ID):  # both absent: a folder saved before save ids
        raise _MixedSaves(
            f"{directory}: {WEIGHTS_FILE} (save {weights_id}) and {CONFIG_FILE} (save "
            f"{meta.get(SAVE_ID)}) come from different saves (an interrupted save_pretrained?): "
            "save the model again"
        )
    return meta, state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], fits: str) -> None:
    """Load ``state`` into ``model`` exactly; ``fits`` starts the one-line error
    ("checkpoint X does not fit its config") for missing, unexpected or misshapen tensors."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshapen = [
        f"{key} is {tuple(state[key].shape)}, the config's model has {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    if missing or unexpected or misshapen:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} tensors {missing[:3]}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} {unexpected[:3]}")
        if misshapen:
            problems.append(f"{len(misshapen)} of another shape ({'; '.join(misshapen[:3])})")
        raise ClipfuseError(f"{fits}: {', '.join(problems)}")
    model.load_state_dict(state)
