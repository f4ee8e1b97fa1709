"""The training data stream of a run, drawn from its seed alone (:mod:`clipfuse.seeding`).

:class:`SeededSampler` yields ``(index, sample_seed)`` pairs in the main process: per epoch a
permutation of the dataset and one augmentation seed per sample, both from a generator seeded by
``(run seed, epoch)``. :class:`SeededSamples` wraps a dataset so that each sample's transform
is reseeded with its own seed before it runs. A batch is therefore the same whichever worker
loads it, however many workers there are, and whatever else the run draws.
"""

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from clipfuse.seeding import derive_seed


class SeededSampler(Sampler[tuple[int, int]]):
    """Shuffled ``(index, sample_seed)`` pairs, a new draw per epoch (``set_epoch``).

    Args:
        num_samples: the dataset's length.
        seed: the run seed.

    :meth:`resume_at` makes the next iteration skip the samples a resumed run has already
    trained on in its current epoch, so a run stopped at step N and resumed sees the batches an
    uninterrupted run would have seen (exactly on one process; under DDP the rest of the epoch
    is shared out again).
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, step: int, samples_per_step: int) -> None:
        """Skip, in every iteration of the epoch ``step`` stopped in, what ``step`` steps of
        ``samples_per_step`` samples consumed of it (epochs of whole steps, the tail dropped).
        Every iteration, not only the next: a loader with workers starts drawing indices when
        it is built, and Lightning may build one it discards."""
        steps_per_epoch = self.num_samples // samples_per_step
        epoch, done = divmod(step, steps_per_epoch)
        self._resume = (epoch, done * samples_per_step)
        self.epoch = epoch  # Lightning may draw from a resumed loader before it sets the epoch

    def _skipped(self) -> int:
        if self._resume is None or self._resume[0] != self.epoch:
            return 0
        return self._resume[1]

    def draw(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The permutation and the per-sample seeds of ``epoch``."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, f"data:{epoch}"))
        order = torch.randperm(self.num_samples, generator=generator)
        seeds = torch.randint(0, 2**62, (self.num_samples,), generator=generator)
        return order, seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self.draw(self.epoch)
        skip = self._skipped()
        yield from zip(order.tolist()[skip:], seeds.tolist()[skip:], strict=True)

    def __len__(self) -> int:
        return self.num_samples


class SeededSamples(Dataset):
    """``dataset[(index, seed)]``: ``dataset[index]`` with its transform reseeded by ``seed``
    first (the dataset's ``transform`` must have ``reseed``, as
    :class:`~clipfuse.data.transforms.PairTransform` does)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        self.dataset.transform.reseed(seed)
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)
