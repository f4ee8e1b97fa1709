"""Peak memory of a model's inference and training step, for ``clipfuse bench``.

On CPU each model is built and run once in a fresh subprocess (:func:`memory_worker`), so no
other model's buffers or allocator caches count; the peak is
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, reset to the current RSS before each phase
through ``/proc/self/clear_refs`` (Linux). On CUDA: ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``, in this process.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from clipfuse.allocator import keep_freed_memory
from clipfuse.errors import ClipfuseError
from clipfuse.research.bench.candidates import Candidate, candidate_loss_args, create_from_spec
from clipfuse.research.bench.timing import random_batch, sgd_optimizer, train_step


def _rss_mb(field_name: str) -> float | None:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process in MB, None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: ``echo 5 > clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _tensor_mb(model: nn.Module) -> float:
    """Parameters and buffers in MB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def memory_worker(spec_path: str) -> None:
    """Entry point of the memory subprocess: prints one JSON line of MB figures.

    ``weights``: parameters and buffers; ``inference`` / ``train``: peak
    resident memory during one forward at the largest batch / one training step, above the
    level before it. The peak is ``getrusage(RUSAGE_SELF).ru_maxrss``, reset to the current
    RSS before each phase where Linux allows it (``/proc/self/clear_refs``); elsewhere the
    figures are deltas of the never-reset peak and can only under-estimate. The allocator is
    tuned as the ``clipfuse`` command tunes it (:func:`clipfuse.allocator.keep_freed_memory`).
    """
    import resource

    keep_freed_memory()
    job = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)

    def peak_mb() -> float:  # ru_maxrss is in KiB on Linux (bytes on macOS)
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20

    def start_phase() -> float:
        if _reset_peak_rss():
            current = _rss_mb("VmRSS")
            if current is not None:
                return current
        return peak_mb()

    size, classes = job["size"], job["classes"]
    images, labels = random_batch(job["batch"], size, torch.device("cpu"), classes)
    train_images, train_labels = random_batch(
        job["train_batch"], size, torch.device("cpu"), classes
    )
    model, _ = create_from_spec(job["spec"])
    model.eval()
    result = {"weights": _tensor_mb(model)}
    base = start_phase()
    with torch.inference_mode():
        model(images)
    result["inference"] = peak_mb() - base
    if job["train_batch"] > 0:
        model.train()
        optimizer = sgd_optimizer(model)
        base = start_phase()
        train_step(model, optimizer, train_images, train_labels, candidate_loss_args(job["spec"]))
        result["train"] = peak_mb() - base
    if not _reset_peak_rss():
        result["peak_not_reset"] = True
    print(json.dumps(result))


def memory_cpu(candidate: Candidate, job: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        spec_path = Path(folder) / "job.json"
        spec_path.write_text(json.dumps({**job, "spec": candidate.spec}))
        code = "import sys; from clipfuse.research.bench.memory import memory_worker; memory_worker(sys.argv[1])"
        env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"])}
        result = subprocess.run(
            [sys.executable, "-c", code, str(spec_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ClipfuseError(f"bench: memory measurement of {candidate.name} failed: {tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_cuda(model: nn.Module, job: dict, device: torch.device) -> dict:
    mb = 2**20
    torch.cuda.synchronize(device)
    weights = torch.cuda.memory_allocated(device)  # this model's, and any other resident
    images, labels = random_batch(job["batch"], job["size"], device, job["classes"])
    torch.cuda.reset_peak_memory_stats(device)
    model.eval()
    with torch.inference_mode():
        model(images)
    result = {
        "weights": _tensor_mb(model),
        "inference": (torch.cuda.max_memory_allocated(device) - weights) / mb,
    }
    if job["train_batch"] > 0:
        train_images, train_labels = random_batch(
            job["train_batch"], job["size"], device, job["classes"]
        )
        optimizer = sgd_optimizer(model)
        model.train()
        torch.cuda.reset_peak_memory_stats(device)
        train_step(model, optimizer, train_images, train_labels)
        result["train"] = (torch.cuda.max_memory_allocated(device) - weights) / mb
        del optimizer
        model.zero_grad(set_to_none=True)
    return result
