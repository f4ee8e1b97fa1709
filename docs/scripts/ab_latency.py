"""Whole-model latency (batch 1, 512x512, 2 threads), this version's fusion module against another
version's (same weights), interleaved round-robin. Usage: python ab_latency.py OLD_convformer.py"""

import copy
import importlib.util
import statistics
import sys
import time

import torch

from clipfuse.build import class_names_of, create_model_from_config
from clipfuse.config import load_config

spec = importlib.util.spec_from_file_location("before", sys.argv[1])
before = importlib.util.module_from_spec(spec)
spec.loader.exec_module(before)
torch.set_num_threads(2)
torch.manual_seed(0)


def build(name):
    config = load_config(f"configs/{name}_mobilenetv2_ade20k_512x512_80k.yaml")
    return create_model_from_config(config, class_names_of(config), pretrained=False).eval()


def with_old_fusion(model, **kwargs):
    old = copy.deepcopy(model)
    old.head.fusion = before.ConvFormer(num_blocks=6, **kwargs).eval()
    old.head.fusion.load_state_dict(model.head.fusion.state_dict())
    return old


models = {
    "plain": build("plain"),
    "convformer": build("convformer"),
    "lite": build("convformer-lite"),
}
models["convformer (before)"] = with_old_fusion(models["convformer"], dim=512, heads=8)
models["lite (before)"] = with_old_fusion(models["lite"], dim=256, heads=4, downsample="depthwise")
names, images = list(models), torch.randn(1, 3, 512, 512)
times = {name: [] for name in names}
with torch.inference_mode():
    for name in names:
        models[name](images)
    for round_index in range(10):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            models[name](images)
            times[name].append(time.perf_counter() - start)
reference = statistics.median(times["plain"])
for name in names:
    median = statistics.median(times[name])
    print(f"{name:22s}{1000 * median:8.1f} ms  x{median / reference:.3f}")
