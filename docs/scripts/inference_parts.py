"""Where bf16 channels-last inference spends its time, by part of the segmentor (backbone,
language head, decoder, the final resize of the logits), for plain FPN and the Conv-Former in one
interleaved round robin (ADE20K configs, 512x512, batch 1, random weights, weights cast once as
``predict`` and ``eval`` run them), with each part's GMACs and GFLOP/s.

    PYTHONPATH=src .venv/bin/python docs/scripts/inference_parts.py --rounds 12

The allocator is tuned as the ``clipfuse`` command tunes it (clipfuse.allocator); run with
``CLIPFUSE_MALLOC=system`` for glibc's defaults.
"""

import argparse
import statistics
import time

import torch

from clipfuse.allocator import keep_freed_memory
from clipfuse.analysis import segmentor_cost
from clipfuse.research.bench.timing import inference_runner
from clipfuse.build import class_names_of, cost_model
from clipfuse.config import load_config

PARTS = ("backbone", "head", "decoder")
COST_GROUP = {"backbone": "backbone", "head": "fusion", "decoder": "decoder"}


def timed_forward(model, run) -> dict[str, float]:
    """One forward pass (``run``, :func:`clipfuse.research.bench.timing.inference_runner` of
    ``model``); seconds from the previous part's end to each part's end."""
    ends: dict[str, float] = {}

    def mark_end(part: str):
        def hook(*_) -> None:  # returns None: the part's output is left as it is
            ends[part] = time.perf_counter()

        return hook

    hooks = [
        getattr(model, part).register_forward_hook(mark_end(part))
        for part in PARTS
        if getattr(model, part, None) is not None
    ]
    start = time.perf_counter()
    run()
    ends["resize"] = time.perf_counter()
    for hook in hooks:
        hook.remove()
    seconds, previous = {}, start
    for part, end in ends.items():
        seconds[part], previous = end - previous, end
    seconds["total"] = ends["resize"] - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("allocator:", keep_freed_memory())
    torch.set_num_threads(args.threads)
    images = torch.randn(1, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    models = {}
    for method in ("plain", "convformer"):
        config = load_config(f"configs/{method}_mobilenetv2_ade20k_512x512_80k.yaml")
        model = cost_model(config, class_names_of(config)).eval()
        cost = segmentor_cost(model, args.size, args.size)
        model = model.to(memory_format=torch.channels_last)
        models[method] = (model, inference_runner(model, images, torch.bfloat16), cost)
    samples: dict[str, dict[str, list[float]]] = {method: {} for method in models}
    for round_index in range(args.warmup + args.rounds):
        for method, (model, run, _) in models.items():
            for part, seconds in timed_forward(model, run).items():
                if round_index >= args.warmup:
                    samples[method].setdefault(part, []).append(seconds)
    print(f"{'model':12s}{'part':10s}{'ms':>8s}{'GMACs':>8s}{'GFLOP/s':>9s}")
    for method, parts in samples.items():
        groups = models[method][2]["groups"]
        for part, values in parts.items():
            ms = 1000 * statistics.median(values)
            if part == "total":
                gmacs = models[method][2]["gmacs"]
            else:
                gmacs = groups.get(COST_GROUP.get(part, ""), {}).get("gmacs", 0.0)
            print(f"{method:12s}{part:10s}{ms:8.1f}{gmacs:8.2f}{2 * gmacs / ms * 1000:9.0f}")
    plain, convformer = (1000 * statistics.median(samples[m]["total"]) for m in models)
    print(f"Conv-Former / plain: {convformer / plain:.3f}x time")


if __name__ == "__main__":
    main()
