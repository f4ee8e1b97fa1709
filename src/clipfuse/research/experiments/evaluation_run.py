"""Evaluation runs of an experiment (``evaluate: RUN`` in the spec): a run that trains nothing
and scores another run's checkpoints, seed by seed, with other evaluation settings
(``data.val_size``, ``data.eval_split``, ``eval.*``) or, with ``trained_weights``, the trained
weights of a ``train.ema_decay`` run instead of their average. Both rows come from one training,
so they pair exactly; the runner (:mod:`clipfuse.research.experiments.runner`) gives the evaluation
run's row the evaluated run's cost, training time and batch stream."""

import json
from pathlib import Path

from clipfuse.config import changed_keys
from clipfuse.engine import evaluate
from clipfuse.engine.run_folder import METRICS_FILE, resolved_config, write_run_config
from clipfuse.errors import ClipfuseError
from clipfuse.evaluation import metrics_json
from clipfuse.fileio import atomic_write_text
from clipfuse.research.experiments.report import RESULT_FILE
from clipfuse.research.experiments.spec import ExperimentSpec, seed_folder


def score_checkpoint(
    spec: ExperimentSpec, out: Path, name: str, seed: int, folder: Path, config: dict
) -> dict:
    """Score, for evaluation run ``name`` of ``spec`` at ``seed`` (its ``config``), the
    checkpoint of the run it evaluates, in the grid folder ``out``; write its run ``folder``
    (config, metrics) and return the evaluated run's result row."""
    run = spec.run(name)
    trained = Path(out) / seed_folder(run.evaluates, seed)
    checkpoint = trained / "checkpoints" / "last.ckpt"
    if not (trained / RESULT_FILE).is_file() or not checkpoint.is_file():
        raise ClipfuseError(
            f"{name} seed {seed} evaluates {run.evaluates} seed {seed}, whose "
            f"finished run folder {trained} (with checkpoints/last.ckpt) is not here; a run done "
            "from its record has no weights: delete its record to train it again"
        )
    saved = resolved_config(spec.run(run.evaluates).config(seed))[0]
    config = resolved_config(config)[0]
    overrides = [
        f"{key}={json.dumps(new)}" for key, (_, new) in changed_keys(saved, config).items()
    ]
    folder.mkdir(parents=True, exist_ok=True)
    write_run_config(folder, config)
    results = evaluate(checkpoint, overrides, quiet=True, trained=run.trained_weights)
    metrics = {**results, "step": config["train"]["max_steps"], "evaluated": str(checkpoint)}
    atomic_write_text(folder / METRICS_FILE, metrics_json(metrics))
    return json.loads((trained / RESULT_FILE).read_text())
