"""``clipfuse flops`` and ``bench``: parsing and dispatch to ``clipfuse.analysis`` (flops) and
``clipfuse.research.bench`` (bench)."""

import argparse
import json
import sys

from clipfuse.cli.options import (
    add_config,
    add_device,
    add_overrides,
    add_size,
    pick,
    split_overrides,
)

EVAL_SIZE_HELP = (
    "input size (default: the config's evaluation size: eval.crop_size when eval.mode is "
    "slide, else data.val_size, else data.crop_size)"
)


def _flops(args: argparse.Namespace) -> None:
    from clipfuse.analysis import config_cost, format_cost
    from clipfuse.config import load_config

    cost = config_cost(load_config(args.config, args.overrides), args.size)
    print(json.dumps(cost, indent=2) if args.json else format_cost(cost))


def _layouts(formats: list[str] | None) -> list[bool] | None:
    return None if formats is None else [name == "channels_last" for name in formats]


def _bench(args: argparse.Namespace) -> None:
    from clipfuse.fileio import atomic_write_text, prepare_file
    from clipfuse.research.bench.bench import bench, format_bench

    if args.output:
        prepare_file(args.output, "output file")  # before the measurements, not after them
    progress = None if args.json else (lambda message: print(f"... {message}", file=sys.stderr))
    configs, overrides = split_overrides(args.config)
    result = bench(
        configs,
        **pick(args, "size", "threads", "repeats", "warmup", "train_batch", "train_steps"),
        **pick(args, "paths", "onnx_exporter", "smp_reference", "channels_last", "device"),
        batches=args.batch,
        memory=not args.no_memory,
        train_precisions=args.train_precision,
        train_channels_last=_layouts(args.train_memory_format),
        train_profile=args.train_profile,
        parts=args.parts,
        overrides=[*overrides, *args.overrides],
        progress=progress,
    )
    if args.output:
        atomic_write_text(args.output, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else format_bench(result))


def add_flops(commands) -> None:
    """``flops``."""
    flops = commands.add_parser("flops", help="GMACs and parameters of a config's model, by part")
    add_config(flops, required=True)
    add_size(flops, help=EVAL_SIZE_HELP)
    flops.add_argument("--json", action="store_true", help="print JSON")
    add_overrides(flops)
    flops.set_defaults(func=_flops)


def add_bench(commands) -> None:
    """``bench``."""
    bench = commands.add_parser(
        "bench", help="latency, throughput, memory and GMACs of configs' models, side by side"
    )
    add_config(
        bench,
        many=True,
        required=True,
        help="YAML config files or shipped config names; ratios are to the first (KEY=VALUE "
        "words after them are overrides)",
    )
    add_size(bench, help=EVAL_SIZE_HELP.replace("the config's", "the first config's"))
    bench.add_argument(
        "--batch", type=int, nargs="+", default=[1, 4], help="inference batch sizes (default: 1 4)"
    )
    bench.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    bench.add_argument(
        "--repeats", type=int, default=5, help="timed calls per model and batch (default 5)"
    )
    bench.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    bench.add_argument(
        "--train-batch", type=int, default=2, help="training batch (default 2; 0: skip)"
    )
    bench.add_argument(
        "--train-steps", type=int, default=3, help="timed SGD steps (default 3; 0: skip)"
    )
    bench.add_argument(
        "--paths",
        nargs="+",
        default=[],
        metavar="PATH",
        help="also time the models on these inference paths, side by side: eager-fp32, "
        "eager-fp32-cl, eager-bf16, eager-bf16-cl (PyTorch; -cl: channels-last), ort-fp32, "
        "ort-int8 (onnxruntime; int8: static QDQ, calibrated on random images); eager-fp32, "
        "the reference, is always timed",
    )
    bench.add_argument(
        "--onnx-exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="the exporter of the ort-* paths (default torchscript: faster to export)",
    )
    bench.add_argument(
        "--smp-reference",
        action="store_true",
        help="add segmentation_models_pytorch's FPN on the first config's backbone",
    )
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    bench.add_argument("--channels-last", action="store_true", help="run every model channels-last")
    bench.add_argument(
        "--train-precision",
        nargs="+",
        default=["32-true"],
        metavar="P",
        help="time training in each: 32-true (default), bf16-mixed, 16-mixed",
    )
    bench.add_argument(
        "--train-memory-format",
        nargs="+",
        choices=["contiguous", "channels_last"],
        help="time training in each layout (default: that of --channels-last)",
    )
    bench.add_argument(
        "--parts",
        action="store_true",
        help="also time each part of the models (backbone, language head, decoder, upsampling) "
        "alone at batch 1 on every path of --paths (eager-fp32 without it), with %% of peak",
    )
    bench.add_argument(
        "--train-profile",
        action="store_true",
        help="also time each part of the training step (backbone, head + decoder, loss, "
        "backward, optimizer) in each precision and layout, with its GFLOP and %% of peak",
    )
    add_device(bench)
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.add_argument("--output", help="also write the JSON to this file")
    add_overrides(bench, help="overrides for every config, e.g. data.crop_size=[256,320]")
    bench.set_defaults(func=_bench)
