"""What is measured on a run's model after training: GMACs, parameters and CPU latency.

The model is built from the run's config with random weights (:func:`clipfuse.build.cost_model`:
cost and speed do not depend on them). GMACs and parameters are
:func:`clipfuse.analysis.segmentor_cost` of one image at the spec's ``eval_size``; latency is
the median of ``repeats`` forward passes at batch 1 after ``warmup`` untimed ones, in ``eval()``
and ``torch.inference_mode()``, on the CPU with torch's current thread count.
"""

from collections.abc import Sequence

import torch


def measure_model(config: dict, size: Sequence[int], warmup: int = 3, repeats: int = 10) -> dict:
    """``{"gmacs", "params_m", "groups", "latency_ms", "latency_iqr_ms", "latency_threads",
    "cpu"}`` of the model of ``config`` at ``size`` (H, W), batch 1, on the CPU."""
    from clipfuse.analysis import segmentor_cost
    from clipfuse.build import class_names_of, cost_model
    from clipfuse.research.bench.timing import (
        cpu_name,
        inference_runner,
        random_batch,
        round_robin,
        summarize_ms,
    )

    class_names = class_names_of(config)
    torch.manual_seed(0)
    model = cost_model(config, class_names).eval()
    cost = segmentor_cost(model, *size)
    images, _ = random_batch(1, size, torch.device("cpu"), len(class_names))
    samples = round_robin(
        [("model", inference_runner(model, images))], warmup, repeats, lambda: None
    )
    latency = summarize_ms(samples["model"])
    return {
        "gmacs": cost["gmacs"],
        "params_m": cost["params_m"],
        "groups": cost["groups"],
        "latency_ms": latency["median"],
        "latency_iqr_ms": latency["iqr"],
        "latency_threads": torch.get_num_threads(),
        "cpu": cpu_name(),
    }
