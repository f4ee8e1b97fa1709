"""Paired differences between the runs of an experiment, seed by seed.

For each ``A:B`` pair, the mIoU of run A minus that of run B at every seed both have finished
(the same seed starts the same-shaped weights from the same draw and feeds the same batches, so
the difference cancels most of the seed's noise), then their mean and sample std (n - 1) and
on how many seeds A wins. Prints a Markdown table; ``--json`` also writes the numbers.

    python docs/scripts/paired_differences.py docs/results/camvid_1000/results.json \\
        convformer:fpn convformer:convformer_text_random [--json out.json]
"""

import argparse
import json
from pathlib import Path

from clipfuse.experiments import mean_std


def paired(rows: list[dict], run: str, baseline: str) -> dict:
    by_seed = {(row["run"], row["seed"]): row["mIoU"] for row in rows}
    seeds = sorted(seed for name, seed in by_seed if name == run and (baseline, seed) in by_seed)
    differences = [by_seed[run, seed] - by_seed[baseline, seed] for seed in seeds]
    mean, std = mean_std(differences)
    return {
        "run": run,
        "baseline": baseline,
        "seeds": seeds,
        "differences": differences,
        "mean": mean,
        "std": std,
        "wins": sum(difference > 0 for difference in differences),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| run − baseline | seeds | per seed | mean ± std | wins |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        per_seed = " / ".join(f"{difference:+.2f}" for difference in result["differences"])
        spread = "" if result["std"] is None else f" ± {result['std']:.2f}"
        mean = "–" if result["mean"] is None else f"{result['mean']:+.2f}{spread}"
        lines.append(
            f"| `{result['run']}` − `{result['baseline']}` | {len(result['seeds'])} "
            f"| {per_seed} | {mean} | {result['wins']}/{len(result['seeds'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an experiment's results.json")
    parser.add_argument("pairs", nargs="+", help="RUN:BASELINE")
    parser.add_argument("--json", type=Path, help="also write the differences here")
    args = parser.parse_args()
    rows = json.loads(args.results.read_text())["rows"]
    results = [paired(rows, *pair.split(":", 1)) for pair in args.pairs]
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
