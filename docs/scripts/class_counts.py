"""Images per class of a config's dataset (with its dataset options), per split, as a Markdown
table: the long tail of docs/guide/data.md ("The CCP protocol"), defined on the first split.

    PYTHONPATH=src .venv/bin/python docs/scripts/class_counts.py configs/_base_/ccp.yaml \
        [--splits train val]
"""

import argparse

from clipfuse.config import load_config
from clipfuse.data import class_image_counts, create_dataset

TAIL = 50  # a class in fewer training images than this is in the tail (issue 21)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    args = parser.parse_args()
    data = load_config(args.config)["data"]
    datasets = [
        create_dataset(data["dataset"], split, root=data["root"], **data["dataset_kwargs"])
        for split in args.splits
    ]
    counts = [class_image_counts(dataset) for dataset in datasets]
    header = " | ".join(
        f"{split} images ({len(d)})" for split, d in zip(args.splits, datasets, strict=True)
    )
    print(f"| class | {header} | tail |\n|---|{'---|' * len(datasets)}---|")
    for name, first in sorted(counts[0].items(), key=lambda item: -item[1]):
        cells = " | ".join(str(split_counts[name]) for split_counts in counts)
        print(f"| {name} | {cells} | {'tail' if first < TAIL else ''} |")
    tail = sum(count < TAIL for count in counts[0].values())
    print(f"\n{len(counts[0])} classes; {tail} in fewer than {TAIL} {args.splits[0]} images")


if __name__ == "__main__":
    main()
