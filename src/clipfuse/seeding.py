"""Where a run's randomness comes from: one seed, separate streams.

A run's ``seed`` feeds three independent streams, so that two runs of one seed differ only in
what their configs say:

* the **training data stream** (sample order, crop windows, flips, photometric draws):
  :class:`clipfuse.data.sampling.SeededSampler` draws it from ``derive_seed(seed, "data:<epoch>")``
  in the main process, whatever the number of workers, the model or the validation schedule;
* **model initialisation**: :func:`init_rng` builds the model under its own generator
  (``derive_seed(seed, "init")``), so a bigger model does not shift the data stream;
* everything else drawn during training (dropout) uses the global generator, seeded with
  ``seed`` after the model is built.

Validation draws from none of them. The random-text and shuffled-text controls take their
draw from the seed too (:func:`with_resolved_draws`), and the run records it.

A checkpoint carries the global generators' state (:func:`random_state`), which a resumed run
restores (:func:`restore_random_state`): stopped and resumed, it draws what the uninterrupted
run draws (:class:`clipfuse.engine.batch_stream.BatchStream`).

:data:`SEEDING_VERSION` is recorded next to every run's results: 1 was the global-generator
seeding before this module (model init and data order shared one stream), 2 is this one.
A report pairs runs strictly only when both used version 2 and saw the same batches.
"""

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

SEEDING_VERSION = 2


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for ``stream`` of run ``seed`` (a hash: streams do not overlap)."""
    digest = hashlib.sha256(f"clipfuse:{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextmanager
def init_rng(seed: int) -> Iterator[None]:
    """Run the block (model construction) on the global CPU generator seeded for ``init``,
    then restore the generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        yield


def random_state() -> dict:
    """The state of every global generator a training step may draw from, as tensors and
    plain values (what a ``weights_only`` checkpoint loads): torch's CPU generator, the current
    CUDA device's once CUDA is in use, numpy's global generator and Python's ``random``."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_random_state(state: dict) -> bool:
    """Set the global generators to ``state`` (from :func:`random_state`); whether that is
    all of this process's draws: False when the state holds a CUDA generator and this process
    does not use CUDA, or the other way round (a run resumed on another kind of device)."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])
    return ("cuda" in state) == torch.cuda.is_initialized()


def with_resolved_draws(config: dict) -> dict:
    """``config`` with its seed-dependent text draws made explicit, as the run records them:
    ``text.encoder: random:D`` becomes ``random:D:<seed>`` (a new set of class vectors per
    seed), ``text.shuffle: true`` becomes the draw ``<seed>``."""
    text = dict(config["text"])
    seed = int(config["seed"])
    encoder = text.get("encoder")
    if isinstance(encoder, str) and encoder.startswith("random:") and encoder.count(":") == 1:
        text["encoder"] = f"{encoder}:{seed}"
    if text.get("shuffle") is True:
        text["shuffle"] = seed
    return {**config, "text": text}
