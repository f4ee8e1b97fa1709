"""CPU profile of the Conv-Former fusion module (C=512, K=150, 6 blocks, 8 heads, 2 threads) on a
16x16 map (a 512x512 image), see docs/research/speed.md.

    python docs/scripts/profile_fusion.py [--map H W] [--before OLD_convformer.py] [--profile-before]

With ``--before`` the two versions (same weights) are also timed interleaved, 20 rounds.
"""

import argparse
import importlib.util
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from clipfuse.models.convformer import ConvFormer

parser = argparse.ArgumentParser()
parser.add_argument("--map", type=int, nargs=2, default=[16, 16])
parser.add_argument("--before", help="convformer.py (or conv_former.py) of another version")
parser.add_argument("--profile-before", action="store_true", help="profile that version")
args = parser.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
versions = {"after": ConvFormer(512, num_blocks=6, heads=8).eval()}
if args.before:
    spec = importlib.util.spec_from_file_location("before", args.before)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    versions["before"] = module.ConvFormer(512, num_blocks=6, heads=8).eval()
    versions["before"].load_state_dict(versions["after"].state_dict())
image, text = torch.randn(1, 512, *args.map), torch.randn(150, 512)
names = list(versions)
times = {name: [] for name in names}
with torch.inference_mode():
    for name in names:
        versions[name](image, text)
    for round_index in range(20):
        for name in names if round_index % 2 else names[::-1]:
            start = time.perf_counter()
            versions[name](image, text)
            times[name].append(time.perf_counter() - start)
    for name in names:
        print(f"fusion {name}: median {1000 * statistics.median(times[name]):.1f} ms per forward")
    fusion = versions["before" if args.profile_before else "after"]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(5):
            fusion(image, text)
table = prof.key_averages(group_by_input_shape=True)
print(table.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))
