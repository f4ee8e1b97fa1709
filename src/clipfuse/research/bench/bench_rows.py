"""The rows of a ``clipfuse bench`` result, from the timed samples: ms summaries, the GFLOP/s
achieved as a fraction of the matmul peak, and training throughput and speed-ups."""

from clipfuse.research.bench.candidates import Candidate
from clipfuse.research.bench.timing import summarize_ms


def mode_name(precision: str, channels_last: bool) -> str:
    """The name of a training mode: its precision, ``+channels_last`` where it is."""
    return f"{precision}+channels_last" if channels_last else precision


def latency_summaries(latency: dict[int, list[float]]) -> dict[str, dict]:
    """Per batch size (as a string): the ms summary of its calls, with ``per_image``."""
    summaries = {}
    for batch, seconds in latency.items():
        summary = summarize_ms(seconds)
        summary["per_image"] = summary["median"] / batch
        summaries[str(batch)] = summary
    return summaries


def cost_and_latency_row(
    candidate: Candidate, latency: dict[int, list[float]], peak_gflops: float
) -> dict:
    """A candidate's row: what it is, GMACs and parameters, PyTorch latency, and the GFLOP/s
    it achieves as a fraction of the matmul peak."""
    info = candidate.info
    latency_ms = latency_summaries(latency)
    achieved = {
        batch: 2 * info["gmacs"] * int(batch) / (summary["median"] / 1000)
        for batch, summary in latency_ms.items()
    }
    return {
        "name": candidate.name,
        **{k: info[k] for k in ("method", "backbone", "num_classes") if k in info},
        "head_kwargs": info.get("head_kwargs", {}),
        "gmacs": info["gmacs"],
        "params_m": info["params_m"],
        "groups": info.get("groups", {}),
        "latency_ms": latency_ms,
        "achieved_gflops": achieved,
        "peak_fraction": {batch: gflops / peak_gflops for batch, gflops in achieved.items()},
    }


def train_figures(
    seconds_by_mode: dict[str, list[float]], modes: list[tuple[str, bool]], batch: int
) -> dict:
    """Training step time and images/s per mode, speed-up over the first mode, and the
    first mode's figures as ``train_step_ms`` / ``train_images_per_s``."""
    train = {}
    for mode, seconds in seconds_by_mode.items():
        summary = summarize_ms(seconds)
        train[mode] = {"step_ms": summary, "images_per_s": batch / (summary["median"] / 1000)}
    first = train[mode_name(*modes[0])]
    for entry in train.values():
        entry["speedup"] = first["step_ms"]["median"] / entry["step_ms"]["median"]
    return {
        "train": train,
        "train_step_ms": first["step_ms"],
        "train_images_per_s": first["images_per_s"],
    }


def result_rows(
    candidates: list[Candidate],
    latency: dict[str, dict[int, list[float]]],
    train: dict[str, dict],
    memory_mb: dict[str, dict],
    peak_gflops: float,
) -> list[dict]:
    """One row per candidate: cost and latency, then what else was measured (``train``:
    :func:`train_figures` per candidate)."""
    rows = []
    for candidate in candidates:
        row = cost_and_latency_row(candidate, latency[candidate.name], peak_gflops)
        row.update(train.get(candidate.name, {}))
        if candidate.name in memory_mb:
            row["memory_mb"] = memory_mb[candidate.name]
        rows.append(row)
    return rows
