"""The plot of an experiment's report, ``results.png``: val mIoU against GMACs, one labelled
point per run, error bars = the standard deviation over seeds."""

import io
from collections.abc import Sequence

from clipfuse.extras import require
from clipfuse.research.experiments.spec import ExperimentSpec


def results_plot(spec: ExperimentSpec, summaries: Sequence[dict]) -> bytes:
    """PNG of val mIoU against GMACs: one point per run (its summary,
    :func:`clipfuse.research.experiments.report.summarize`), error bars = std over seeds."""
    require("matplotlib", "the experiment plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summaries = [s for s in summaries if s["mIoU"]["mean"] is not None]
    figure = Figure(figsize=(7, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = {"plain": "tab:gray", "denseclip": "tab:orange", "convformer": "tab:blue"}
    for summary in summaries:
        colour = colours.get(str(summary["method"]), "tab:green")
        axes.errorbar(
            summary["gmacs"]["mean"] or 0.0,
            summary["mIoU"]["mean"],
            yerr=summary["mIoU"]["std"] or 0.0,
            fmt="o",
            color=colour,
            capsize=4,
        )
    for method, colour in colours.items():
        if any(s["method"] == method for s in summaries):
            axes.plot([], [], "o", color=colour, label=method)
    if summaries:
        axes.legend(loc="best", fontsize=8)
        axes.margins(x=0.25, y=0.15)
    height, width = spec.eval_size
    axes.set_xlabel(f"GMACs ({height}x{width}, one image)")
    axes.set_ylabel("val mIoU (%)")
    axes.set_title(f"{spec.name}: mIoU vs GMACs (error bars: std over seeds)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    _label_points(axes, summaries)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _label_points(axes, summaries: Sequence[dict]) -> None:
    """Names every point ("run (n=seeds)"); a label that would cover a marker or a label already
    placed is moved up or down in line steps (boxes estimated from the text length)."""
    axes.autoscale_view()
    points_per_pixel = 72 / axes.figure.dpi
    right_end = axes.bbox.x1 * points_per_pixel
    anchors = []  # (summary, x, y, px, py): data coordinates, then points on the figure
    for summary in summaries:
        x, y = summary["gmacs"]["mean"] or 0.0, summary["mIoU"]["mean"]
        px, py = axes.transData.transform((x, y)) * points_per_pixel
        anchors.append((summary, x, y, px, py))
    placed = [(px - 4, py - 4, px + 4, py + 4) for *_, px, py in anchors]  # markers, then labels
    for summary, x, y, px, py in sorted(anchors, key=lambda anchor: -anchor[2]):
        text = f"{summary['run']} (n={summary['n']})"
        width = 4.6 * len(text)
        right = px + 6 + width <= right_end  # on the right unless that leaves the axes
        left_edge = px + 6 if right else px - 6 - width
        for step in (0, -1, 1, -2, 2, -3, 3, -4, 4):
            dy = 11 * step
            box = (left_edge, py + dy - 5, left_edge + width, py + dy + 5)
            if not any(_overlap(box, other) for other in placed):
                break
        placed.append(box)
        axes.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(6 if right else -6, dy),
            ha="left" if right else "right",
            va="center",
            fontsize=8,
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if step else None,
        )


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
