"""The tables ``clipfuse bench`` prints, and the ratios to the first model they show."""

from clipfuse.research.bench.parts import format_parts
from clipfuse.research.bench.paths import format_paths
from clipfuse.research.bench.train_profile import format_train_profile


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def add_ratios(rows: list[dict]) -> None:
    """``row["ratios"]``: each figure divided by the first row's (higher = more of it)."""
    first = rows[0]

    def figures(row: dict) -> dict[str, float | None]:
        out: dict[str, float | None] = {"gmacs": row["gmacs"], "params": row["params_m"]}
        for batch, summary in row["latency_ms"].items():
            out[f"latency_b{batch}"] = summary["median"]
        if "train_images_per_s" in row:
            out["train_throughput"] = row["train_images_per_s"]
        for key in ("weights", "inference", "train"):
            if key in row.get("memory_mb", {}):
                out[f"memory_{key}"] = row["memory_mb"][key]
        return out

    reference = figures(first)
    for row in rows:
        row["ratios"] = {
            key: _ratio(value, reference.get(key)) for key, value in figures(row).items()
        }


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def _of_cores(machine: dict) -> str:
    """`` of N usable cores`` (results from before the field was recorded have none)."""
    return f" of {machine['cores']} usable cores" if "cores" in machine else ""


def format_bench(result: dict) -> str:
    """Two plain-text tables: cost and latency; throughput, memory and efficiency; then the
    training step per mode and by part, where measured."""
    machine, settings, rows = result["machine"], result["settings"], result["rows"]
    name_width = max(12, *(len(r["name"]) for r in rows)) + 2
    lines = [*_machine_lines(machine, settings), ""]
    lines += [*_cost_and_latency_table(rows, settings, name_width), ""]
    lines += _throughput_memory_efficiency_table(rows, settings, name_width)
    if settings.get("paths"):
        lines += ["", format_paths(result, name_width)]
    if "parts" in result:
        lines += ["", format_parts(result, name_width)]
    modes = settings.get("train_modes", [])
    if len(modes) > 1:
        lines += ["", _format_train_modes(rows, modes, settings, name_width)]
    if "train_profile" in result:
        lines += ["", format_train_profile(result["train_profile"], settings, name_width)]
    return "\n".join(lines)


def _machine_lines(machine: dict, settings: dict) -> list[str]:
    """What was measured where: size, threads, device, timing method, matmul peak, load."""
    height, width = settings["size"]
    lines = [
        f"clipfuse bench: {height}x{width}, {machine['threads']} threads"
        f"{_of_cores(machine)}, {machine['device']} "
        f"({machine['name']}), torch {machine['torch']}",
        f"latency: median over {settings['repeats']} calls after {settings['warmup']} warm-up, "
        "round-robin, per image for batches > 1; +- is the inter-quartile range; "
        "x = ratio to the first row",
        f"matmul peak: {machine['matmul_gflops']:.1f} GFLOP/s (fp32 {machine['matmul_n']}^2)",
    ]
    auto = machine.get("auto")
    if auto:
        lines.append(f"auto: inference on {auto['inference_path']}, {auto['train_note']}")
    load = machine.get("load_average") or {}
    if load.get("before") is not None:
        lines.append(
            f"load average (1 min) before / after: {load['before']:.2f} / {load['after']:.2f} "
            f"on {machine['cpu_count']} CPUs (other processes make CPU timings noisy)"
        )
    return lines


def _latency_label(batch: str) -> str:
    return f"b{batch} ms" + ("/img" if batch != "1" else "")


def _cost_and_latency_table(rows: list[dict], settings: dict, name_width: int) -> list[str]:
    """GMACs, parameters, and PyTorch latency per batch size."""
    batches = [str(b) for b in settings["batches"]]
    header = f"{'model':<{name_width}}{'GMACs':>8}{'x':>6}{'params M':>10}{'x':>6}"
    for batch in batches:
        header += f"{_latency_label(batch):>13}{'+-':>7}{'x':>6}"
    lines = [header]
    for row in rows:
        ratios = row["ratios"]
        line = (
            f"{row['name']:<{name_width}}{row['gmacs']:>8.2f}{ratios['gmacs']:>6.2f}"
            f"{row['params_m']:>10.2f}{ratios['params']:>6.2f}"
        )
        for batch in batches:
            summary = row["latency_ms"][batch]
            line += (
                f"{summary['median'] / int(batch):>13.1f}{summary['iqr'] / int(batch):>7.1f}"
                f"{ratios[f'latency_b{batch}']:>6.2f}"
            )
        lines.append(line)
    return lines


def _throughput_memory_efficiency_table(
    rows: list[dict], settings: dict, name_width: int
) -> list[str]:
    """Training images/s, peak memory, and the GFLOP/s achieved (and % of the matmul peak)."""
    batches = [str(b) for b in settings["batches"]]
    header = f"{'model':<{name_width}}"
    if settings["train_batch"]:
        train_label = f"train img/s (b{settings['train_batch']})"
        header += f"{train_label:>20}{'x':>6}"
    if settings["memory"]:
        header += f"{'weights MB':>11}{f'infer MB b{batches[-1]}':>15}{'x':>6}"
        if settings["train_batch"]:
            header += f"{'train MB':>10}{'x':>6}"
    for batch in batches:
        header += f"{f'GFLOP/s b{batch}':>13}{'% peak':>8}"
    lines = [header]
    for row in rows:
        ratios = row["ratios"]
        line = f"{row['name']:<{name_width}}"
        if settings["train_batch"]:
            line += f"{row['train_images_per_s']:>20.2f}{ratios['train_throughput']:>6.2f}"
        if settings["memory"]:
            memory = row["memory_mb"]
            line += (
                f"{memory['weights']:>11.0f}{memory['inference']:>15.0f}"
                f"{_fmt(ratios.get('memory_inference'), '.2f', 6)}"
            )
            if settings["train_batch"]:
                line += f"{memory['train']:>10.0f}{_fmt(ratios.get('memory_train'), '.2f', 6)}"
        for batch in batches:
            line += (
                f"{row['achieved_gflops'][batch]:>13.1f}{100 * row['peak_fraction'][batch]:>8.1f}"
            )
        lines.append(line)
    return lines


def _format_train_modes(rows: list[dict], modes: list[str], settings: dict, width: int) -> str:
    """Training step time per precision / memory layout; x = speed-up over the first."""
    lines = [
        f"training step, batch {settings['train_batch']}: median ms of {settings['train_steps']} "
        f"steps after 1 warm-up, interleaved; x = speed-up over {modes[0]}"
    ]
    header = f"{'model':<{width}}"
    for mode in modes:
        header += f"{mode + ' ms':>{max(12, len(mode) + 5)}}{'x':>6}"
    lines.append(header)
    for row in rows:
        line = f"{row['name']:<{width}}"
        for mode in modes:
            entry = row["train"][mode]
            line += f"{entry['step_ms']['median']:>{max(12, len(mode) + 5)}.0f}"
            line += f"{entry['speedup']:>6.2f}"
        lines.append(line)
    return "\n".join(lines)
