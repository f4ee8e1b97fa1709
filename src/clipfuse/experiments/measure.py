"""What is measured on a run's model after training: GMACs, parameters and CPU latency.

Both come from :func:`clipfuse.analysis.bench.bench` with one candidate: the model is built from
the run's config with ``pretrained=False`` (random weights: cost and speed do not depend on
them), GMACs and parameters are :func:`clipfuse.analysis.segmentor_cost` of one image at the
spec's ``eval_size``, and latency is the median of ``repeats`` forward passes at batch 1 after
``warmup`` untimed ones, in ``eval()`` and ``torch.inference_mode()``, on the CPU with torch's
current thread count.
"""

import contextlib
import sys
from collections.abc import Sequence

# A tiny matrix product: bench always measures the machine's matmul peak, which is not needed here.
_MATMUL_N = 128


def measure_model(config: dict, size: Sequence[int], warmup: int = 3, repeats: int = 10) -> dict:
    """``{"gmacs", "params_m", "groups", "latency_ms", "latency_iqr_ms", "latency_threads",
    "cpu"}`` of the model of ``config`` at ``size`` (H, W), batch 1, on the CPU."""
    from clipfuse.analysis.bench import bench

    candidate = {**config, "name": "model"}
    with contextlib.redirect_stdout(sys.stderr):  # model building may print notes
        result = bench(
            [candidate],
            size=tuple(size),
            batches=(1,),
            repeats=repeats,
            warmup=warmup,
            train_batch=0,
            memory=False,
            device="cpu",
            matmul_n=_MATMUL_N,
        )
    row = result["rows"][0]
    latency = row["latency_ms"]["1"]
    return {
        "gmacs": row["gmacs"],
        "params_m": row["params_m"],
        "groups": row["groups"],
        "latency_ms": latency["median"],
        "latency_iqr_ms": latency["iqr"],
        "latency_threads": result["machine"]["threads"],
        "cpu": result["machine"]["name"],
    }
