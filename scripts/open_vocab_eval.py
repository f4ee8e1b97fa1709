"""mIoU of the open-vocabulary score-map path vs the decoder, on a model's dataset split.

    .venv/bin/python scripts/open_vocab_eval.py --model runs/demo/checkpoints/last.ckpt \
        --out open_vocab_eval.json [--limit N] [--queries "sky, building, ..."]

Writes the JSON report (see clipfuse.inference.open_vocab.evaluate_open_vocab) and prints
one line per path.
"""

import argparse
import sys

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.inference.open_vocab import evaluate_open_vocab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder or a training .ckpt")
    parser.add_argument("--out", default="open_vocab_eval.json", help="JSON report")
    parser.add_argument("--data-root", help="dataset root (default: the model config's)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument(
        "--queries", help="one text per trained class, comma-separated, for the score-map path"
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    queries = [q.strip() for q in args.queries.split(",")] if args.queries else None
    try:
        report = evaluate_open_vocab(
            args.model,
            data_root=args.data_root,
            split=args.split,
            limit=args.limit,
            queries=queries,
            device=args.device,
            batch_size=args.batch_size,
            json_path=args.out,
        )
    except ClipfuseError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    for path in ("decoder", "score_map"):
        print(f"{path:<10} mIoU {report[path]['mIoU']:.2f}  aAcc {report[path]['aAcc']:.2f}")
    print(f"{report['images']} {report['split']} images; report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
