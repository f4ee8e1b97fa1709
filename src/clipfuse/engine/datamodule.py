"""The Lightning data module: datasets and transforms from the ``data`` config section."""

from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from clipfuse.data import create_dataset, create_eval_transform, create_train_transform
from clipfuse.data.collate import collate_by_size
from clipfuse.data.sampling import SeededSampler, SeededSamples
from clipfuse.engine.stops import worker_init
from clipfuse.errors import ClipfuseError
from clipfuse.seeding import derive_seed


class SegmentationDataModule(L.LightningDataModule):
    """Train / val loaders for a registered dataset.

    Args:
        dataset: a registered dataset name (``camvid``, ``ade20k``, ``cityscapes``, ``folder``).
        mean, std: the backbone's input normalisation (0-255 units).
        root: the data root (else ``$CLIPFUSE_DATA``, then ``../shared/data``).
        crop_size, base_size, scale_range, cat_max_ratio: training augmentation.
        val_size: validation images are resized to this (H, W) or short side; logits are
            resized back to the full-resolution mask.
        batch_size, val_batch_size, num_workers: loaders.
        dataset_kwargs: extra dataset arguments.
        eval_split: the split validated during training and by ``clipfuse eval`` (``val``;
            ``test`` where the dataset has one, e.g. CamVid's 233 test images).
        train_images: train on this many of the training images (a fixed subset of the
            training stream only, :meth:`~clipfuse.data.SegmentationDataset.keep_images`);
            None: all.
        seed: the run seed: the training stream (order and augmentations) is drawn from it
            alone (:class:`~clipfuse.data.sampling.SeededSampler`), in any number of workers.

    ``train_sampler`` is the sampler of the last training loader made (a resumed run tells it
    where to continue).
    """

    def __init__(
        self,
        dataset: str,
        mean: Sequence[float],
        std: Sequence[float],
        root: str | None = None,
        crop_size: Sequence[int] = (512, 512),
        base_size: int | None = None,
        scale_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        val_size: Sequence[int] | int | None = None,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int = 2,
        dataset_kwargs: dict | None = None,
        eval_split: str = "val",
        train_images: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.name = dataset
        self.root = root
        self.dataset_kwargs = dataset_kwargs or {}
        self.train_transform = create_train_transform(
            crop_size=tuple(crop_size),
            mean=tuple(mean),
            std=tuple(std),
            base_size=base_size,
            scale_range=tuple(scale_range),
            cat_max_ratio=cat_max_ratio,
        )
        size = tuple(val_size) if isinstance(val_size, (list, tuple)) else val_size
        self.eval_transform = create_eval_transform(mean=tuple(mean), std=tuple(std), size=size)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.eval_split = eval_split
        self.train_images = train_images
        self.seed = seed
        self.train_sampler: SeededSampler | None = None

    def dataset(self, split: str, train: bool = False) -> Dataset:
        transform = self.train_transform if train else self.eval_transform
        dataset = create_dataset(
            self.name, split, root=self.root, transform=transform, **self.dataset_kwargs
        )
        if train:
            dataset.keep_images(self.train_images)
        return dataset

    def check_files(self, splits: Sequence[str] = ("train", "val")) -> None:
        """Check every image and mask header of ``splits`` before training (see
        :meth:`SegmentationDataset.check_files`): one error lists every bad file."""
        for split in splits:
            self.dataset(split).check_files()

    def check_batches(self, world_size: int = 1) -> None:
        """Refuse a training split that cannot fill one step, before anything is written.

        Each of the ``world_size`` processes takes ``batch_size`` images a step, and the
        training loader drops an incomplete batch (``drop_last``, so every step has the same
        size and a resumed run knows where it stopped), so fewer than ``batch_size x
        world_size`` training images (those ``train_images`` keeps) would train nothing:
        Lightning only warns "No training batches" and a run would end at step 0 as if
        trained."""
        dataset = self.dataset("train", train=True)
        images, needed = len(dataset), self.batch_size * world_size
        if images >= needed:
            return
        kept = f" (data.train_images {self.train_images})" if self.train_images else ""
        one_step = f"data.batch_size {self.batch_size}"
        if world_size > 1:
            one_step += f" on each of {world_size} processes, {needed} images"
        largest = images // world_size
        fix = (
            f"lower data.batch_size to {largest} or less"
            if largest
            else "train on fewer processes (train.devices, train.num_nodes): data.batch_size "
            f"times their number must be at most {images}"
        )
        raise ClipfuseError(
            f"the train split of dataset {self.name} ({dataset.where}) has {images} "
            f"image(s){kept}, fewer than one training step takes ({one_step}; incomplete "
            f"batches are dropped, so nothing would be trained): {fix}, or add training images"
        )

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: Sampler | None,
        stream: str,
        collate_fn: Callable | None = None,
    ) -> DataLoader:
        """A loader whose worker seeds come from its own generator (``stream`` of the run
        seed), so creating it draws nothing from the global generator."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(derive_seed(self.seed, stream)),
            worker_init_fn=worker_init,  # the training process handles SIGTERM and Ctrl-C
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train", train=True)
        self.train_sampler = SeededSampler(len(dataset), self.seed)
        trainer = self.trainer
        if trainer is not None and trainer.global_step:
            # a resumed run (the step is restored before the loader is made): Lightning builds
            # the loader's iterator, which starts drawing indices with workers, before any
            # callback hook of the run, so the sampler must know where to continue now
            self.train_sampler.resume_at(trainer.global_step, self.batch_size * trainer.world_size)
        return self._loader(SeededSamples(dataset), self.batch_size, self.train_sampler, "workers")

    def val_dataloader(self) -> DataLoader:
        """Batches of :class:`~clipfuse.data.collate.SizeGroups`: images of different sizes
        share a batch, each size predicted at its own (the metrics do not depend on
        ``val_batch_size``)."""
        dataset = self.dataset(self.eval_split)
        return self._loader(dataset, self.val_batch_size, None, "val", collate_by_size)
