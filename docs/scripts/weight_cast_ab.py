"""bf16 inference with the weights cast once (clipfuse.precision.AutocastWeights, what predict,
eval, serve and bench run) against autocast casting them on every forward (before), plain FPN
and the Conv-Former, all in one interleaved round robin (batch 1, random weights, 2 threads).

    PYTHONPATH=src .venv/bin/python docs/scripts/weight_cast_ab.py --size 512 --rounds 14
"""

import argparse
import statistics

import torch

from clipfuse.build import class_names_of, cost_model
from clipfuse.config import load_config
from clipfuse.research.bench.timing import inference_runner, round_robin


def recast_every_forward(model, images):
    """The forward as it ran before: autocast casts each weight inside the call."""

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(images)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contiguous", action="store_true", help="not channels-last")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = torch.contiguous_format if args.contiguous else torch.channels_last
    images = torch.randn(1, 3, args.size, args.size).contiguous(memory_format=layout)
    runners = []
    for method in ("plain", "convformer"):
        config = load_config(f"configs/{method}_mobilenetv2_ade20k_512x512_80k.yaml")
        model = cost_model(config, class_names_of(config)).eval().to(memory_format=layout)
        runners.append((f"{method}, cast once", inference_runner(model, images, torch.bfloat16)))
        runners.append((f"{method}, recast", recast_every_forward(model, images)))
    samples = round_robin(runners, warmup=2, repeats=args.rounds - 2, sync=lambda: None)
    median = {key: 1000 * statistics.median(seconds) for key, seconds in samples.items()}
    for key, ms in median.items():
        method, mode = key.split(", ")
        before, plain = median[f"{method}, recast"], median[f"plain, {mode}"]
        print(f"{key:24s}{ms:8.1f} ms  x recast {ms / before:.3f}  x plain {ms / plain:.3f}")


if __name__ == "__main__":
    main()
