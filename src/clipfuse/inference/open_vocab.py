"""How good is the open-vocabulary path? mIoU of the score map vs the decoder on the trained
labels, over a dataset split (what ``scripts/open_vocab_eval.py`` runs)."""

import json
import os
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from clipfuse.errors import ClipfuseError
from clipfuse.fileio import atomic_write_text


def evaluate_open_vocab(
    model_path: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    split: str = "val",
    limit: int | None = None,
    queries: Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int = 4,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Predict every image of ``split`` of the model's training dataset twice, through the
    decoder (the trained head, as ``clipfuse eval`` does) and through the cosine score map with
    the same labels (``open_vocab=True``: what new labels go through), and score both.

    Args:
        model_path: a pretrained folder or a ``.ckpt`` of a convformer / denseclip model.
        data_root: the dataset's root (default: the model config's ``data.root`` search).
        split: the split to score.
        limit: score only the first ``limit`` images.
        queries: one text per trained class, in order, for the score-map path (e.g.
            synonyms, to test unseen wordings); default the trained class names (with the
            training aliases, so the stored embeddings are used).
        device, batch_size: as :meth:`ClipfuseModel.predict`.
        json_path: also write the result there.

    Returns:
        ``{"model", "dataset", "split", "images", "queries", "decoder": metrics,
        "score_map": metrics, "gap_mIoU"}`` with metrics as ``clipfuse eval --json`` prints.
    """
    from clipfuse.data import build_dataset
    from clipfuse.evaluation import SegmentationMetrics, results_to_json
    from clipfuse.inference.pretrained import load

    model = load(model_path, device=device)
    if not model.supports_open_vocab:
        raise ClipfuseError(f"model {model_path} is {model.method!r}: it has no score map")
    data = model.config["data"]
    root = data_root if data_root is not None else data.get("root")
    dataset = build_dataset(data["dataset"], split, root=root, **data.get("dataset_kwargs", {}))
    names = model.class_names
    if list(dataset.classes) != names:
        raise ClipfuseError(
            f"dataset {data['dataset']} has classes {', '.join(dataset.classes)}; the model was "
            f"trained on {', '.join(names)}"
        )
    if queries is not None and len(queries) != len(names):
        raise ClipfuseError(
            f"queries: expected one per trained class ({len(names)}), got {len(queries)}"
        )
    score_labels = (
        None if queries is None else [f"{q}={n}" for q, n in zip(queries, names, strict=True)]
    )
    count = len(dataset) if limit is None else min(limit, len(dataset))
    metrics = {path: SegmentationMetrics(len(names)) for path in ("decoder", "score_map")}
    with tqdm(total=count, desc="open-vocab eval", unit="image", disable=not progress) as bar:
        for start in range(0, count, batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, count))]
            images = [image for image, _ in samples]
            masks = [torch.tensor(mask).long()[None] for _, mask in samples]
            decoder = model.predict(images, batch_size=batch_size, scores=False)
            score_map = model.predict(
                images, score_labels, open_vocab=True, batch_size=batch_size, scores=False
            )
            for mask, a, b in zip(masks, decoder, score_map, strict=True):
                metrics["decoder"].update(torch.from_numpy(a.label_map).long()[None], mask)
                metrics["score_map"].update(torch.from_numpy(b.label_map).long()[None], mask)
            bar.update(len(samples))
    results = {path: results_to_json(metric.compute(), names) for path, metric in metrics.items()}
    report = {
        "model": str(model_path),
        "method": model.method,
        "backbone": model.backbone,
        "dataset": data["dataset"],
        "split": split,
        "images": count,
        "eval": model.config["eval"],
        "queries": list(queries) if queries is not None else names,
        **results,
        "gap_mIoU": results["decoder"]["mIoU"] - results["score_map"]["mIoU"],
    }
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    return report
