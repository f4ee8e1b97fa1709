"""The speed / accuracy frontier of the light CamVid models, generated from committed result
files: per model, its val mIoU over the seeds trained (mean ± sample std; the weight average, as
the experiment runner scores it), its ONNX fp32 and int8 val mIoU through `clipfuse eval` (same
weights, mean over the seeds exported), its paired difference to FPN 128 (strict where both
trained on the same batches) and its latency on each inference path of a `clipfuse bench` run
per CPU.

    .venv/bin/python docs/scripts/frontier.py            # print the table (markdown)
    .venv/bin/python docs/scripts/frontier.py --write    # write frontier.{md,png,json}

Every figure is read from a file under :data:`RESULTS`; nothing is typed in. A model missing
from a bench file is shown as not benched on that CPU; one missing from every bench file, or
without a finished seed, is an error naming the files and the value.
"""

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from model_table import RESULTS, experiment_rows, read_result  # docs/scripts

from clipfuse.errors import ClipfuseError
from clipfuse.research.experiments.compare import compare
from clipfuse.research.experiments.tables import format_mean_std, mean_std

ROOT = Path(__file__).resolve().parents[2]
BENCHES = (  # a column and a panel per CPU
    RESULTS / "speed" / "frontier_288x384.json",
    RESULTS / "speed" / "frontier_288x384_epyc.json",
)
EXPORTED = RESULTS / "camvid_frontier" / "int8"  # `clipfuse eval` of each exported file
EXPORTS = {"onnx_fp32": "ONNX fp32", "int8": "ONNX int8"}  # file suffix: column
OUT = RESULTS / "camvid_frontier" / "frontier"  # .md, .png and .json
BASELINE = "FPN 128"
PATHS = ("eager-bf16-cl", "ort-fp32", "ort-int8")  # the columns; the fastest of all is plotted
GOAL_FPS, GOAL_MIOU = 60.0, 70.0


@dataclass(frozen=True)
class Point:
    """A model on the frontier: its bench row, the experiment run that trained it, and the
    prefix of its `clipfuse eval` files under :data:`EXPORTED` (None: not exported)."""

    label: str
    bench: str
    experiment: str
    run: str
    exported: str | None


POINTS = (
    Point(
        BASELINE, "plain-w128_mobilenetv2_camvid_256x320_5200", "camvid_schedule", "w128_5200", None
    ),
    Point("FPN 96", "w96", "camvid_frontier", "w96", "w96"),
    Point("FPN 128 separable", "w128-sep", "camvid_frontier", "sep", "sep"),
    Point("FPN 128 separable, 3 levels", "w128-sep-l3", "camvid_frontier", "sep_l3", "sep_l3"),
    Point("Lite R-ASPP", "lraspp", "camvid_frontier", "lraspp", "lraspp"),
    Point(
        "Conv-Former lite + FPN 128 separable",
        "convformer-lite-sep",
        "camvid_frontier",
        "convformer_lite_sep",
        "convformer_lite_sep",
    ),
)


def _seeds(point: Point) -> list[dict]:
    """The point's finished seeds, their run named by its label (so runs of two experiments
    compare)."""
    rows = experiment_rows(point.experiment, point.run, point.label)
    return [{**row, "run": point.label} for row in rows]


def _exported(point: Point, kind: str) -> dict[int, float]:
    """Seed -> val mIoU of the exported file ``kind`` (``onnx_fp32``, ``int8``), from the files
    ``<prefix>_seed<N>_<kind>.json``."""
    if point.exported is None:
        return {}
    pattern = re.compile(rf"{re.escape(point.exported)}_seed(\d+)_{kind}\.json")
    found = (pattern.fullmatch(path.name) for path in EXPORTED.iterdir())
    return {int(m[1]): read_result(EXPORTED / m[0])["mIoU"] for m in found if m}


def _benches() -> list[tuple[Path, dict, dict[str, dict]]]:
    """Each bench file, read, with its rows by name; all at one size."""
    benches = []
    for path in BENCHES:
        bench = read_result(path)
        benches.append((path, bench, {row["name"]: row for row in bench["rows"]}))
    sizes = {tuple(bench["settings"]["size"]) for _, bench, _ in benches}
    if len(sizes) > 1:
        raise ClipfuseError(
            f"{', '.join(map(str, BENCHES))}: benches at sizes {sizes}; expected one"
        )
    return benches


def _speed(bench: dict, rows: dict[str, dict], point: Point) -> dict | None:
    """The point's median ms per inference path (batch 1) on that bench's CPU, and its fastest;
    None where that bench has no row for it."""
    if point.bench not in rows:
        return None
    ms = {name: value["1"]["median"] for name, value in rows[point.bench]["paths"].items()}
    fastest = min(ms, key=ms.get)
    cpu = bench["machine"]["name"]
    return {
        "cpu": cpu,
        "gmacs": rows[point.bench]["gmacs"],
        "ms": ms,
        "fastest_path": fastest,
        "fps": 1000 / ms[fastest],
    }


def frontier() -> dict:
    """The points, as OUT.json holds them."""
    benches = _benches()
    rows = {point.label: _seeds(point) for point in POINTS}
    every_row = [row for seeds in rows.values() for row in seeds]
    points = []
    for point in POINTS:
        mean, std = mean_std([row["mIoU"] for row in rows[point.label]])
        exported = {kind: _exported(point, kind) for kind in EXPORTS}
        difference = compare(every_row, point.label, BASELINE) if point.label != BASELINE else None
        speed = [_speed(bench, by_name, point) for _, bench, by_name in benches]
        benched = [item for item in speed if item is not None]
        if not benched:
            files = ", ".join(map(str, BENCHES))
            raise ClipfuseError(f"{files}: no bench row {point.bench!r} ({point.label})")
        points.append(
            {
                "label": point.label,
                "source": f"{point.experiment}/{point.run}",
                "seeds": [row["seed"] for row in rows[point.label]],
                "mIoU": mean,
                "mIoU_std": std,
                **{f"{kind}_seeds": sorted(seeds) for kind, seeds in exported.items()},
                **{
                    f"{kind}_mIoU": statistics.fmean(seeds.values()) if seeds else None
                    for kind, seeds in exported.items()
                },
                "vs_baseline": difference.as_dict() if difference else None,
                "gmacs": benched[0]["gmacs"],
                "speed": speed,
            }
        )
    height, width = benches[0][1]["settings"]["size"]
    cpus = [bench["machine"]["name"] for _, bench, _ in benches]
    return {"cpus": cpus, "size": [height, width], "points": points}


def _difference(item: dict | None) -> str:
    if item is None:
        return "–"
    seeds = len(item["seeds"])
    if item["interval"] is None:
        return f"{item['mean']:+.2f} ({seeds} seed{'s' if seeds > 1 else ''}, no interval)"
    low, high = item["interval"]
    return f"{item['mean']:+.2f} [{low:+.2f}, {high:+.2f}] ({seeds} seeds; {item['pairing']})"


def table(record: dict) -> list[str]:
    """The markdown table and its legend."""
    height, width = record["size"]
    header = ["model", "GMACs", "val mIoU (seeds)", f"− {BASELINE}, paired [95% CI]"]
    header += [f"{EXPORTS[kind]} val mIoU (seeds)" for kind in EXPORTS]
    for cpu in record["cpus"]:
        header += [f"ms {' / '.join(PATHS)}, {cpu}", f"frames/s, fastest path, {cpu}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in record["points"]:
        cells = [
            point["label"],
            f"{point['gmacs']:.2f}",
            f"{format_mean_std(point['mIoU'], point['mIoU_std'])} ({len(point['seeds'])})",
            _difference(point["vs_baseline"]),
        ]
        for kind in EXPORTS:
            mean, seeds = point[f"{kind}_mIoU"], point[f"{kind}_seeds"]
            cells.append("not measured" if mean is None else f"{mean:.2f} ({len(seeds)})")
        for speed in point["speed"]:
            if speed is None:
                cells += ["not benched", "–"]
                continue
            cells.append(" / ".join(f"{speed['ms'][path]:.1f}" for path in PATHS))
            cells.append(f"{speed['fps']:.0f} ({speed['fastest_path']})")
        lines.append("| " + " | ".join(cells) + " |")
    sources = ", ".join(f"`{point['source']}`" for point in record["points"])
    benches = ", ".join(path.relative_to(ROOT).as_posix() for path in BENCHES)
    lines += [
        "",
        f"Generated by `docs/scripts/frontier.py` from the experiment runs {sources} "
        f"(docs/research/results/<experiment>/results.json), the `clipfuse eval` files in "
        f"{EXPORTED.relative_to(ROOT).as_posix()} and the benches {benches} ({height}x{width}, the "
        "size the models predict at, before the logits are resized to the frame; batch 1, 2 "
        "threads; median of each path). val mIoU: the weight average as the runner scores it, "
        "mean ± sample std; ONNX fp32 / int8: the same weights exported (`clipfuse export "
        "--exporter torchscript --quantize int8`), scored by `clipfuse eval`, mean over the "
        "seeds exported.",
    ]
    return lines


def plot(record: dict, path: Path) -> None:
    """mIoU against frames/s on the fastest path, a panel per CPU: filled, the eager val mIoU
    (± sample std); hollow, the int8 file's; dashed, the goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(record["cpus"])
    figure, panels = plt.subplots(1, count, figsize=(5.6 * count, 4.6), sharey=True, squeeze=False)
    height, width = record["size"]
    for index, (axes, cpu) in enumerate(zip(panels[0], record["cpus"], strict=True)):
        for number, point in enumerate(record["points"]):
            if point["speed"][index] is None:
                continue
            fps, color = point["speed"][index]["fps"], f"C{number}"  # a colour per model
            axes.errorbar(
                fps, point["mIoU"], yerr=point["mIoU_std"] or 0, marker="o", capsize=3, color=color
            )
            label = f"{point['label']} (n={len(point['seeds'])})"
            axes.annotate(
                label, (fps, point["mIoU"]), textcoords="offset points", xytext=(5, 4), fontsize=7
            )
            if point["int8_mIoU"] is not None:
                axes.plot(fps, point["int8_mIoU"], marker="o", mfc="none", color=color)
        axes.axvline(GOAL_FPS, linestyle="--", color="grey", linewidth=0.8)
        axes.axhline(GOAL_MIOU, linestyle="--", color="grey", linewidth=0.8)
        axes.set_title(cpu, fontsize=9)
        axes.set_xlabel(f"frames/s, fastest path ({height}x{width}, batch 1, 2 threads)")
        axes.grid(alpha=0.3)
        axes.margins(x=0.15)  # room for the labels
    panels[0][0].set_ylabel("CamVid val mIoU (%): filled eager, hollow int8")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUT.name}.md, .png and .json")
    args = parser.parse_args(argv)
    try:
        record = frontier()
    except ClipfuseError as error:
        sys.exit(f"frontier: {error}")
    lines = table(record)
    if not args.write:
        print("\n".join(lines))
        return
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    OUT.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    plot(record, OUT.with_suffix(".png"))


if __name__ == "__main__":
    main()
