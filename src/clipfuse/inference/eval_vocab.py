"""Dataset-level open-vocabulary and transfer evaluation (``clipfuse eval-vocab``).

A trained model is scored on a dataset split whose classes need not be its own:

* ``decoder``: the model's own output (the argmax over its trained classes, any method),
  mapped onto the dataset's classes by a label mapping ``model class -> dataset class`` (by
  default every dataset class that is also a trained class or one of its text aliases). Only
  mapped dataset classes are scored; a pixel predicted as an unmapped trained class counts as
  wrong.
* ``open_vocab`` (language-guided models): every dataset class is queried by name through the
  open-vocabulary path (:meth:`ClipfuseModel.predict` with ``open_vocab=True``). A class is
  *seen* when its query is a trained class (its stored embedding is used) and *unseen*
  otherwise (embedded by the model's text encoder), unless ``unseen`` names them. Reported:
  mIoU over all classes, seen / unseen mIoU and their harmonic mean, per class, and calibrated
  stacking (:mod:`clipfuse.evaluation.zero_shot`): the curve over ``gammas``, the ``gamma``
  chosen from seen labels only, and the oracle.

The dataset defaults to the model's training dataset with its options minus ``unseen`` (so a
generalized zero-shot model is scored on every name).
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from clipfuse.errors import ClipfuseError
from clipfuse.evaluation.zero_shot import (
    DEFAULT_GAMMAS,
    DEFAULT_SEEN_DROP,
    CalibratedStacking,
    choose_gamma,
    oracle_gamma,
)
from clipfuse.fileio import atomic_write_text, prepare_file
from clipfuse.inference.labels import find_name, name_index, parse_class_map


@dataclass(frozen=True)
class VocabTask:
    """What one evaluation predicts: ``class_map`` trained index -> dataset index (decoder),
    ``queries`` one text per dataset class and ``seen`` per dataset class (open vocabulary,
    empty for a model without text)."""

    class_map: dict[int, int]
    queries: tuple[str, ...]
    seen: tuple[bool, ...]


def parse_queries(
    names: Sequence[str] | None, classes: Sequence[str], default: Sequence[str]
) -> list[str]:
    """One query per dataset class: ``names`` one per class in order, or ``CLASS=TEXT`` pairs
    replacing some of ``default``."""
    queries = list(default)
    if not names:
        return queries
    paired = ["=" in name for name in names]
    if not any(paired) and len(names) == len(classes):
        return [name.strip() for name in names]
    if not all(paired):
        raise ClipfuseError(
            f"--names: expected one text per dataset class ({len(classes)}: "
            f"{', '.join(classes)}) or CLASS=TEXT pairs, got {len(names)} items"
        )
    class_index = name_index(classes)
    for pair in names:
        dataset_class, _, text = pair.partition("=")
        if not text.strip():
            raise ClipfuseError(f"--names {pair!r}: expected CLASS=TEXT")
        queries[find_name(dataset_class.strip(), class_index, classes, "--names: class")] = (
            text.strip()
        )
    return queries


def plan_task(
    model,
    classes: Sequence[str],
    names: Sequence[str] | None = None,
    mapping: Sequence[str] | None = None,
    unseen: Sequence[str] | None = None,
) -> VocabTask:
    """The :class:`VocabTask` of ``model`` on a dataset with ``classes``."""
    aliases = model.text["aliases"] or None
    class_map = parse_class_map(mapping, model.class_names, classes, aliases)
    if not model.supports_open_vocab:
        if names or unseen:
            raise ClipfuseError(
                f"model method {model.method!r} has no text: --names and --unseen need a "
                "language-guided model (give --map MODEL_CLASS=DATASET_CLASS only)"
            )
        if not class_map:
            raise ClipfuseError(
                f"no class of the dataset ({', '.join(classes)}) is a class of the model "
                f"({', '.join(model.class_names)}): give --map MODEL_CLASS=DATASET_CLASS"
            )
        return VocabTask(class_map, (), ())
    by_dataset = {d: model.class_names[k] for k, d in class_map.items()}
    default = [by_dataset.get(d, name) for d, name in enumerate(classes)]
    queries = parse_queries(names, classes, default)
    choice = model.resolve_labels(
        [f"{q}={c}" for q, c in zip(queries, classes, strict=True)], open_vocab=True
    )
    if unseen is None:
        seen = tuple(k is not None for k in choice.indices)
    else:
        class_index = name_index(classes)
        held_out = {find_name(name, class_index, classes, "--unseen: class") for name in unseen}
        seen = tuple(d not in held_out for d in range(len(classes)))
    return VocabTask(class_map, tuple(queries), seen)


def eval_dataset(model, dataset: str | None, root, split: str):
    """The dataset to score: ``dataset`` (default the model's), with the model's dataset
    options minus ``unseen`` when it is the model's own dataset."""
    from clipfuse.data import create_dataset

    data = model.config["data"]
    name = dataset or data["dataset"]
    own = name.lower() == str(data["dataset"]).lower()
    kwargs = {k: v for k, v in data["dataset_kwargs"].items() if k != "unseen"}
    root = root if root is not None else (data["root"] if own else None)
    return create_dataset(name, split, root=root, **(kwargs if own else {}))


def _mapped_labels(table: np.ndarray, label_map: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(table[label_map].astype(np.int64))[None]


def evaluate_vocab(
    model_path: str | os.PathLike,
    dataset: str | None = None,
    root: str | os.PathLike | None = None,
    split: str = "val",
    names: Sequence[str] | None = None,
    mapping: Sequence[str] | None = None,
    unseen: Sequence[str] | None = None,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    seen_drop: float = DEFAULT_SEEN_DROP,
    limit: int | None = None,
    device: str | None = None,
    batch_size: int = 4,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Score ``model_path`` on ``split`` of ``dataset`` (see the module docstring).

    Args:
        model_path: a pretrained folder or a training ``.ckpt``.
        dataset, root, split: the dataset (a registry name; default the model's), its folder.
        names: queries of the dataset classes (one per class, or ``CLASS=TEXT`` pairs).
        mapping: ``MODEL_CLASS=DATASET_CLASS`` pairs for the decoder (default: same names).
        unseen: dataset classes counted as unseen (default: those whose query is no trained
            class).
        gammas, seen_drop: calibrated stacking's grid and the rule of the chosen ``gamma``.
        limit: score only the first ``limit`` images.
        device, batch_size: as :meth:`ClipfuseModel.predict`.
        json_path: also write the report there (atomically).

    Returns:
        ``{"model", "method", "backbone", "dataset", "split", "images", "classes",
        "decoder": {...} or None, "open_vocab": {...} or None}``.
    """
    from clipfuse.inference.pretrained import load

    if json_path is not None:
        prepare_file(json_path, "report file")
    model = load(model_path, device=device)
    data = eval_dataset(model, dataset, root, split)
    classes = list(data.classes)
    task = plan_task(model, classes, names, mapping, unseen)
    count = len(data) if limit is None else min(limit, len(data))
    decoder, stacking = _score(model, data, task, count, gammas, batch_size, progress)
    report = {
        "model": str(model_path),
        "method": model.method,
        "backbone": model.backbone,
        "dataset": data.name,
        "split": split,
        "images": count,
        "classes": classes,
        "eval": model.config["eval"],
        "decoder": _decoder_report(decoder, task, model.class_names, classes),
        "open_vocab": _open_vocab_report(model, stacking, task, classes, seen_drop),
    }
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    return report


def _score(model, data, task: VocabTask, count, gammas, batch_size, progress):
    """The decoder's (K+1)-class metric (the last class: an unmapped prediction) and the
    open-vocabulary :class:`CalibratedStacking`, over the first ``count`` images."""
    from clipfuse.evaluation import SegmentationMetrics

    k = len(data.classes)
    table = np.full(len(model.class_names), k, dtype=np.int64)
    for trained, dataset_class in task.class_map.items():
        table[trained] = dataset_class
    mapped = np.zeros(256, dtype=bool)
    mapped[list(task.class_map.values())] = True
    decoder = SegmentationMetrics(k + 1) if task.class_map else None
    stacking = CalibratedStacking(task.seen, gammas) if task.queries else None
    labels = [f"{q}={c}" for q, c in zip(task.queries, data.classes, strict=False)]
    with tqdm(total=count, desc="eval-vocab", unit="image", disable=not progress) as bar:
        for start in range(0, count, batch_size):
            samples = [data[i] for i in range(start, min(start + batch_size, count))]
            images = [image for image, _ in samples]
            if decoder is not None:
                predictions = model.predict(images, batch_size=batch_size, scores=False)
                for (_, mask), prediction in zip(samples, predictions, strict=True):
                    target = np.where(mapped[mask], mask, 255).astype(np.int64)
                    decoder.update(
                        _mapped_labels(table, prediction.label_map), torch.from_numpy(target)[None]
                    )
            if stacking is not None:
                predictions = model.predict(images, labels, open_vocab=True, batch_size=batch_size)
                for (_, mask), prediction in zip(samples, predictions, strict=True):
                    stacking.update(prediction.scores, mask)
            bar.update(len(samples))
    return decoder, stacking


def _decoder_report(decoder, task: VocabTask, trained, classes) -> dict | None:
    from clipfuse.evaluation import results_to_json
    from clipfuse.evaluation.metrics import confmat_scores

    if decoder is None:
        return None
    scores = confmat_scores(decoder.confmat)
    scored = sorted(set(task.class_map.values()))
    iou, acc = scores["IoU"][scored], scores["Acc"][scored]
    subset = {
        **scores,
        "IoU": iou,
        "Acc": acc,
        "mIoU": iou.nanmean().item(),
        "mAcc": acc.nanmean().item(),
    }
    return {
        "map": {trained[k]: classes[d] for k, d in task.class_map.items()},
        **results_to_json(subset, [classes[d] for d in scored]),
    }


def _open_vocab_report(model, stacking, task: VocabTask, classes, seen_drop) -> dict | None:
    if stacking is None:
        return None
    curve = stacking.curve()
    chosen = choose_gamma(curve, seen_drop)
    oracle = oracle_gamma(curve)
    return {
        "path": model.open_vocab_path,
        "queries": list(task.queries),
        "seen": [c for c, s in zip(classes, task.seen, strict=True) if s],
        "unseen": [c for c, s in zip(classes, task.seen, strict=True) if not s],
        **stacking.results(0.0, classes),
        "calibrated": {
            "rule": f"largest gamma with seen mIoU within {seen_drop} of gamma=0's "
            "(seen labels only)",
            **stacking.results(chosen, classes),
        },
        "oracle": None
        if oracle is None
        else {"rule": "best hmean (reads unseen labels)", **stacking.results(oracle, classes)},
        "curve": curve,
    }


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_vocab_report(report: dict) -> str:
    """A few lines summing up :func:`evaluate_vocab`'s report."""
    lines = [f"{report['dataset']} {report['split']}, {report['images']} images"]
    decoder, vocab = report["decoder"], report["open_vocab"]
    if decoder is not None:
        mapped = len(decoder["per_class"])
        lines.append(f"decoder ({mapped} mapped classes): mIoU {_number(decoder['mIoU'])}")
    if vocab is not None:
        for label, part in (("open vocab", vocab), ("calibrated", vocab["calibrated"])):
            lines.append(
                f"{label} ({vocab['path']}, gamma {part['gamma']:g}): mIoU "
                f"{_number(part['mIoU'])}  seen {_number(part['seen_mIoU'])}  unseen "
                f"{_number(part['unseen_mIoU'])}  hmean {_number(part['hmean'])}"
            )
    return "\n".join(lines)
