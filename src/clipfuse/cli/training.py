"""``clipfuse train``, ``eval``, ``eval-vocab`` and ``experiment``: parsing and dispatch."""

import argparse
import json
from pathlib import Path

from clipfuse.cli.options import (
    AUTO,
    add_config,
    add_device,
    add_model,
    add_overrides,
    pick,
)
from clipfuse.errors import ClipfuseError, announce


def _train(args: argparse.Namespace) -> None:
    from clipfuse.config import load_config
    from clipfuse.engine import train

    if args.config is None and not args.resume:
        raise ClipfuseError(
            "train needs --config FILE|NAME (or --resume with --out of an existing run)"
        )
    if args.resume and args.out is None:
        raise ClipfuseError("train --resume needs --out RUN_FOLDER: the run to continue")
    # A config file and its overrides are validated before the run folder is touched; without
    # one (--resume), the overrides apply to the run's saved config.
    config = load_config(args.config, args.overrides) if args.config is not None else None
    overrides = args.overrides if config is None else []
    if args.out is not None:
        results = train(config, args.out, resume=args.resume, overrides=overrides)
    else:
        from clipfuse.engine.run_folder import new_run_folder, remove_unused_run_folder

        out = new_run_folder(args.config)
        announce(f"run folder {out} (--out chooses another)")
        try:
            results = train(config, out, overrides=overrides)
        except BaseException:
            remove_unused_run_folder(out)
            raise
    print(f"mIoU {results['mIoU']:.2f}")


def _eval_device(model: str, device: str) -> list[str]:
    """``eval --device`` as the override :func:`clipfuse.engine.evaluate` runs on (Lightning's
    ``train.accelerator``); an exported ``.onnx`` model runs on onnxruntime's CPU."""
    if Path(model).suffix == ".onnx":
        if device not in (AUTO, "cpu"):
            raise ClipfuseError(
                f"{model} runs on onnxruntime's CPU: expected --device auto or cpu, got {device!r}"
            )
        return []
    from clipfuse.inference.predict import resolve_device

    chosen = resolve_device(device)
    if chosen.type == "cuda" and (chosen.index or 0) > 0:
        raise ClipfuseError(
            f"eval --device {device}: eval runs on the first visible GPU; pick this one with "
            f"CUDA_VISIBLE_DEVICES={chosen.index} and --device cuda"
        )
    return [f"train.accelerator={'gpu' if chosen.type == 'cuda' else 'cpu'}"]


def _eval(args: argparse.Namespace) -> None:
    from clipfuse.engine import evaluate

    split = [f"data.eval_split={args.split}"] if args.split else []
    overrides = [*args.overrides, *split, *_eval_device(args.model, args.device)]
    results = evaluate(
        args.model,
        overrides,
        json_path=args.output,
        quiet=args.json,
        trained=args.trained_weights,
    )
    if args.json:
        from clipfuse.evaluation import metrics_json

        print(metrics_json(results))


def _eval_vocab(args: argparse.Namespace) -> None:
    from clipfuse.evaluation.zero_shot import DEFAULT_GAMMAS
    from clipfuse.inference.eval_vocab import evaluate_vocab, format_vocab_report

    report = evaluate_vocab(
        args.model,
        **pick(args, "root", "split", "names", "unseen", "limit"),
        **pick(args, "seen_drop", "device", "batch_size"),
        dataset=args.data,
        mapping=args.map,
        gammas=args.gammas or DEFAULT_GAMMAS,
        json_path=args.output,
        progress=not args.json,
    )
    print(json.dumps(report, indent=2) if args.json else format_vocab_report(report))


def _experiment(args: argparse.Namespace) -> None:
    from clipfuse.research.experiments.runner import rewrite_report, run_experiment

    if args.report_only or args.rows_from:
        if args.only or args.seeds or args.dry_run:
            raise ClipfuseError("--report-only / --from take no --only, --seeds or --dry-run")
        rewrite_report(args.spec, out=args.out, rows_from=args.rows_from)
        return
    run_experiment(args.spec, out=args.out, only=args.only, seeds=args.seeds, dry_run=args.dry_run)


def add_train_and_eval(commands) -> None:
    """``train`` and ``eval``."""
    train = commands.add_parser("train", help="train a model from a YAML config, then evaluate it")
    add_config(train)
    train.add_argument(
        "--out", help="run folder (default: a new runs/<config name>-<YYYYmmdd-HHMMSS>)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its saved config "
        "(overrides may change train.max_steps, val_every, checkpoint_every, log_every)",
    )
    add_overrides(train)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on its dataset's val split")
    add_model(
        evaluate,
        help="a training .ckpt, a model folder or Hub id (owner/name), or an .onnx file from "
        "clipfuse export (run by onnxruntime on the CPU)",
    )
    add_device(evaluate)
    evaluate.add_argument(
        "--split", help="the split to evaluate: val (default: the run's data.eval_split) or test"
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--output", help="also write the per-class metrics to this JSON file")
    evaluate.add_argument(
        "--trained-weights",
        action="store_true",
        help="a train.ema_decay checkpoint's trained weights instead of their average",
    )
    add_overrides(evaluate, help="data.* / eval.* overrides, e.g. eval.flip=true")
    evaluate.set_defaults(func=_eval)


def add_eval_vocab(commands) -> None:
    """``eval-vocab``."""
    vocab = commands.add_parser(
        "eval-vocab", help="score a model on a dataset's names: label mapping, open vocabulary"
    )
    add_model(vocab)
    vocab.add_argument("--data", help="dataset name (default: the model's training dataset)")
    vocab.add_argument("--root", help="dataset folder (default: the registry's search)")
    vocab.add_argument("--split", default="val", help="the split to score (default: val)")
    lists = {
        "--names": "open-vocabulary queries: one text per dataset class, or CLASS=TEXT pairs",
        "--map": "decoder label mapping MODEL_CLASS=DATASET_CLASS (default: same names)",
        "--unseen": "dataset classes counted as unseen (default: queries of no model class)",
    }
    for flag, text in lists.items():
        vocab.add_argument(flag, nargs="+", metavar="NAME", help=text)
    vocab.add_argument("--gammas", nargs="+", type=float, help="stacking offsets (0, 0.5 .. 20)")
    vocab.add_argument(
        "--seen-drop", type=float, default=1.0, help="seen mIoU points the chosen gamma may lose"
    )
    vocab.add_argument("--limit", type=int, help="score only the first N images")
    add_device(vocab)
    vocab.add_argument("--batch-size", type=int, default=4)
    vocab.add_argument("--json", action="store_true", help="print the report as JSON")
    vocab.add_argument("--output", help="also write the report to this JSON file")
    vocab.set_defaults(func=_eval_vocab)


def add_experiment(commands) -> None:
    """``experiment``."""
    experiment = commands.add_parser(
        "experiment",
        help="train a grid of configs x seeds (resumable) and report metrics, cost and latency",
    )
    experiment.add_argument("spec", help="experiment spec YAML (see docs/research/experiments.md)")
    experiment.add_argument(
        "--out", help="grid folder (default: the spec's out, else runs/experiments/<name>)"
    )
    experiment.add_argument(
        "--dry-run", action="store_true", help="print the runs and their status, run nothing"
    )
    experiment.add_argument("--only", nargs="+", metavar="NAME", help="run only these runs")
    experiment.add_argument(
        "--seeds", nargs="+", type=int, metavar="SEED", help="run only these seeds"
    )
    experiment.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from the finished runs, train and measure nothing",
    )
    experiment.add_argument(
        "--from",
        dest="rows_from",
        metavar="RESULTS_JSON",
        help="rewrite the report from the rows of this results.json instead of the run folders "
        "(implies --report-only), into --out, else the spec's report_dir",
    )
    experiment.set_defaults(func=_experiment)
