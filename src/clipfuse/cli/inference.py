"""``clipfuse predict``, ``serve`` and ``export``: parsing and dispatch."""

import argparse

from clipfuse.cli.options import MODEL_HELP, add_device, add_model, add_size, pick


def _predict(args: argparse.Namespace) -> None:
    from clipfuse.inference import load
    from clipfuse.inference.files import predict_to_folder

    model = load(args.model, device=args.device)
    predict_to_folder(
        model, args.images, args.out, **pick(args, "labels", "open_vocab", "batch_size")
    )


def _serve(args: argparse.Namespace) -> None:
    from clipfuse.inference.serve import serve

    options = pick(args, "host", "port", "device", "max_bytes", "max_pixels", "queue", "examples")
    serve(args.model, **options)


def _export(args: argparse.Namespace) -> None:
    from clipfuse.inference.export import export_checkpoint

    out = export_checkpoint(
        args.model,
        args.out,
        format=args.format,
        size=args.size,
        exporter=args.exporter,
        quantize=args.quantize,
        calibration=args.calibration,
        quantized_out=args.quantized_out,
    )
    print(f"{args.model} -> {out}")


def add_predict_and_serve(commands) -> None:
    """``predict`` and ``serve``."""
    predict = commands.add_parser(
        "predict", help="segment images; write colour overlays with a legend and label PNGs"
    )
    predict.add_argument(
        "images", nargs="+", help="image files, folders of images, or video files (.mp4, ...)"
    )
    add_model(
        predict,
        help=f"{MODEL_HELP}, or an .onnx file from clipfuse export (fp32 or int8, run by "
        "onnxruntime on the CPU)",
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
    add_device(predict)
    predict.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    predict.set_defaults(func=_predict)

    serve = commands.add_parser("serve", help="a local web page to try a model on your images")
    add_model(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    add_device(serve)
    serve.add_argument(
        "--max-bytes", type=int, default=20 * 1024 * 1024, help="largest upload in bytes"
    )
    serve.add_argument(
        "--max-pixels", type=int, default=4096 * 4096, help="largest image in pixels (W x H)"
    )
    serve.add_argument(
        "--queue",
        type=int,
        default=4,
        metavar="N",
        help="requests admitted at once, running or waiting; more get HTTP 503 (default: 4)",
    )
    serve.add_argument(
        "--examples",
        metavar="DIR",
        help="a folder of example images shown on the page (default: the shared samples)",
    )
    serve.set_defaults(func=_serve)


def add_export(commands) -> None:
    """``export``."""
    export = commands.add_parser("export", help="export a model to ONNX, vocabulary baked in")
    add_model(export)
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    add_size(export, help="example input traced (default: the crop size); the axes stay dynamic")
    export.add_argument(
        "--exporter",
        choices=["dynamo", "torchscript"],
        default="dynamo",
        help="torch.onnx exporter (default: dynamo)",
    )
    export.add_argument("--quantize", choices=["int8"], help="also write a static int8 (QDQ) model")
    export.add_argument(
        "--calibration", type=int, default=8, help="training images calibrating int8 (8)"
    )
    export.add_argument(
        "--quantized-out", help="the int8 file (default: <out name>.int8.onnx beside --out)"
    )
    export.set_defaults(func=_export)
