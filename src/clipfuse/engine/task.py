"""The Lightning module: losses, optimisation and validation around a plain ``Segmentor``."""

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

from clipfuse.data.collate import SizeGroups
from clipfuse.engine.optim import PolyWithWarmup, create_optimizer
from clipfuse.evaluation import InferenceConfig, SegmentationMetrics, infer_probabilities
from clipfuse.losses import segmentation_loss
from clipfuse.models import Segmentor


class SegmentationTask(L.LightningModule):
    """Trains a :class:`~clipfuse.models.Segmentor` with cross-entropy (ignore 255; plain or
    OHEM, optionally class-weighted: :func:`~clipfuse.losses.segmentation_loss`) plus, for
    language-guided methods, the auxiliary score-map loss ``aux_weight x CE(up(S / T), y)``
    (docs/research/method.md Sec. 3), and validates with the confusion-matrix metrics.

    Args:
        model: the network.
        class_names: K names, in label order.
        max_steps, warmup_steps, poly_power: the poly schedule with linear warm-up
            (``train.*``; no defaults here: the config's are the only ones).
        optim: keyword arguments of ``create_optimizer`` (optimizer, lr, weight_decay,
            momentum, backbone_lr_mult, head_lr_mult); its defaults where absent.
        loss_args: keyword arguments of :func:`~clipfuse.losses.segmentation_loss` (the
            auxiliary loss's aux_weight, 0 turning it off, and aux_temperature; the main
            loss, ce or ohem, its class_weight, ohem_thresh and ohem_min_kept); its defaults
            where absent (:func:`~clipfuse.losses.loss_arguments` reads them from a config).
        inference: how validation images are predicted (whole / slide, flip, scales,
            precision).
        channels_last: keep the model's weights and the images in channels-last memory
            format (NHWC), the fast layout of bf16 convolutions.
        negatives: N x Ct vectors of names that are never a target
            (:mod:`clipfuse.text.negatives`): each training step scores the pixels against
            the class vectors plus ``negatives_per_step`` of them, drawn from
            ``negatives_seed`` and the step (a resumed run draws the same).
    """

    def __init__(
        self,
        model: Segmentor,
        class_names: Sequence[str],
        *,
        max_steps: int,
        warmup_steps: int,
        poly_power: float,
        optim: Mapping[str, Any] | None = None,
        loss_args: Mapping[str, Any] | None = None,
        inference: InferenceConfig | None = None,
        ignore_index: int = 255,
        channels_last: bool = False,
        negatives: torch.Tensor | None = None,
        negatives_per_step: int = 64,
        negatives_seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.class_names = list(class_names)
        self.optim_args = dict(optim or {})
        self.schedule = PolyWithWarmup(max_steps, warmup_steps, poly_power)
        self.loss_args = dict(loss_args or {})
        self.inference = inference or InferenceConfig()
        self.ignore_index = ignore_index
        self.channels_last = channels_last
        self.register_buffer("negatives", negatives, persistent=False)
        self.negatives_per_step = negatives_per_step
        self.negatives_seed = negatives_seed
        self.val_metrics = SegmentationMetrics(len(self.class_names), ignore_index)
        self.last_results: dict | None = None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(
        self, batch: tuple | SizeGroups, dataloader_idx: int
    ) -> tuple | SizeGroups:
        if not self.channels_last:
            return batch
        if isinstance(batch, SizeGroups):
            return SizeGroups([(_channels_last(images), masks) for images, masks in batch.groups])
        images, masks = batch
        return _channels_last(images), masks

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, masks = batch
        outputs = self.model(images, class_embeddings=self._training_classes())
        losses = segmentation_loss(outputs, masks, ignore_index=self.ignore_index, **self.loss_args)
        self.log("train/loss_seg", losses["loss_seg"], prog_bar=False)
        if "loss_aux" in losses:
            self.log("train/loss_aux", losses["loss_aux"])
        self.log("train/loss", losses["loss"], prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)
        return losses["loss"]

    def _training_classes(self) -> torch.Tensor | None:
        """The class vectors plus this step's draw of negative names, or None (the model's
        own classes)."""
        if self.negatives is None:
            return None
        generator = torch.Generator().manual_seed(self.negatives_seed + self.global_step)
        draw = torch.randperm(len(self.negatives), generator=generator)[: self.negatives_per_step]
        classes = self.model.head.text_embeddings
        return torch.cat([classes, self.negatives[draw.to(self.negatives.device)].to(classes)])

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["logits"]

    def validation_step(self, batch: SizeGroups, batch_idx: int) -> None:
        for images, masks in batch.groups:  # one size each: see clipfuse.data.collate
            probabilities = infer_probabilities(
                self._logits,
                images,
                num_classes=len(self.class_names),
                output_size=tuple(masks.shape[-2:]),
                **self.inference.as_kwargs(),
            )
            self.val_metrics.update(probabilities.argmax(1), masks)

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()
        self.val_metrics.reset()
        self.last_results = results
        for key in ("mIoU", "mAcc", "aAcc"):
            # Already synced across ranks by the metric; sync_dist only averages equal values.
            self.log(f"val/{key}", float(results[key]), prog_bar=key == "mIoU", sync_dist=True)

    def configure_optimizers(self):
        optimizer = create_optimizer(self.model, **self.optim_args)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _channels_last(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last)
