"""The nearest seen names of each held-out name in CLIP's text space (docs/research/results.md, "Names
never trained on"): cosines of the bank vectors a config reads, through its text.aliases.

    PYTHONPATH=src .venv/bin/python docs/scripts/unseen_neighbours.py \\
        configs/convformer_mobilenetv2_ccp-gzsl_256x192_200.yaml
"""

import argparse
import json

import numpy as np

from clipfuse.config import load_config
from clipfuse.data import create_dataset
from clipfuse.paths import shared_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    args = parser.parse_args()
    config = load_config(args.config)
    data, text = config["data"], config["text"]
    options = {k: v for k, v in data["dataset_kwargs"].items() if k != "unseen"}
    classes = list(create_dataset(data["dataset"], "val", root=data["root"], **options).classes)
    unseen = set(data["dataset_kwargs"].get("unseen", []))
    bank = shared_root() / text["encoder"].removeprefix("bank:shared:")
    names = json.loads(bank.with_suffix(".json").read_text())
    names = names["classes"] if isinstance(names, dict) else names
    vectors = np.load(bank)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {name: i for i, name in enumerate(names)}
    aliases = text.get("aliases") or {}
    table = np.stack([vectors[row[aliases.get(name, name)]] for name in classes])
    seen = [i for i, name in enumerate(classes) if name not in unseen]
    for i, name in enumerate(classes):
        if name in unseen:
            cosines = table[seen] @ table[i]
            best = np.argsort(-cosines)[:3]
            print(name, ", ".join(f"{classes[seen[j]]} {cosines[j]:.3f}" for j in best))
    gram = table @ table.T
    off = gram[~np.eye(len(classes), dtype=bool)]
    print(f"{len(classes)} classes: mean cosine between two {off.mean():.3f}, min {off.min():.3f}")


if __name__ == "__main__":
    main()
