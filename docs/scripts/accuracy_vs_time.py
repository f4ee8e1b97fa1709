"""Val mIoU against training wall time, from experiments' committed results: one point per run
(mean ± sample std over its seeds), one line per series, as issue 22's accuracy-per-CPU-minute
curve. Writes OUT.png and OUT.json (the points, with the runs and seeds behind each).

    PYTHONPATH=src .venv/bin/python docs/scripts/accuracy_vs_time.py --out docs/research/results/accuracy_vs_time \
        "plain=docs/research/results/camvid_recipe/results.json:trained_full" \
        "plain=docs/research/results/camvid_schedule/results.json:steps2000_trained_full" ...

Each point is SERIES=RESULTS_JSON:RUN. Its minutes are the run's recorded `train_seconds`
(training plus the final validation, as measured: on a busy machine they are longer; an
evaluation run carries the minutes of the training it scores), or, with
`--throughput SERIES=IMAGES_PER_S` (once per series), the series' steps x batch (`--batch`) at that training
throughput, e.g. what `clipfuse bench` measured for the model on an idle machine: the time the
steps take without the machine's other load (validation not included). OUT.json also records
this command and `--note` (where the throughputs come from).
"""

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def point(series: str, source: str, throughput: dict[str, float], batch: int) -> dict:
    path, _, run = source.rpartition(":")
    rows = [r for r in json.loads(Path(path).read_text())["rows"] if r["run"] == run]
    if not rows:
        raise SystemExit(f"error: {path} has no rows of run {run!r}")
    mious = [r["mIoU"] for r in rows]
    recorded = [r["train_seconds"] / 60 for r in rows]
    at_rate = rows[0]["step"] * batch / throughput[series] / 60 if series in throughput else None
    return {
        "series": series,
        "source": path,
        "run": run,
        "steps": rows[0]["step"],
        "seeds": [r["seed"] for r in rows],
        "mIoU": statistics.mean(mious),
        "mIoU_std": statistics.stdev(mious) if len(mious) > 1 else None,
        "minutes": at_rate if at_rate is not None else statistics.mean(recorded),
        "minutes_from": "throughput" if at_rate is not None else "recorded",
        "recorded_minutes": [round(m, 2) for m in recorded],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="OUT.png and OUT.json are written")
    parser.add_argument(
        "--throughput", action="append", default=[], help="SERIES=IMAGES_PER_S (repeatable)"
    )
    parser.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    parser.add_argument(
        "--note", default="", help="recorded in OUT.json (e.g. the throughputs' source)"
    )
    parser.add_argument("points", nargs="+", help="SERIES=RESULTS_JSON:RUN")
    args = parser.parse_args()
    throughput = {k: float(v) for k, v in (item.split("=", 1) for item in args.throughput)}
    points = [point(*item.split("=", 1), throughput, args.batch) for item in args.points]
    figure, axes = plt.subplots(figsize=(6.4, 5.0))
    for series in dict.fromkeys(p["series"] for p in points):
        mine = sorted((p for p in points if p["series"] == series), key=lambda p: p["minutes"])
        axes.errorbar(
            [p["minutes"] for p in mine],
            [p["mIoU"] for p in mine],
            yerr=[p["mIoU_std"] or 0 for p in mine],
            marker="o",
            capsize=3,
            label=series,
        )
        for p in mine:
            axes.annotate(
                f"{p['steps']} steps, n={len(p['seeds'])}",
                (p["minutes"], p["mIoU"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    basis = "at the measured throughput" if throughput else "recorded"
    axes.set_xlabel(f"training time (min, 2 CPU cores, {basis})")
    axes.set_ylabel("CamVid val mIoU (%)")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    figure.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out.with_suffix(".png"), dpi=120)
    command = "PYTHONPATH=src .venv/bin/python " + shlex.join(sys.argv)
    record = {"command": command, "note": args.note, "points": points}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(points, indent=2))


if __name__ == "__main__":
    main()
