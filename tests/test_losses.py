"""The training loss (clipfuse.losses): the default is the plain cross-entropy it always was,
OHEM keeps the hard pixels as mmsegmentation's sampler does, and class weights weigh as
``F.cross_entropy(weight=)`` (issue 22)."""

import math

import pytest
import torch
from torch.nn import functional as F

from clipfuse.config import DEFAULTS
from clipfuse.errors import ClipfuseError
from clipfuse.losses import loss_arguments, ohem_labels, segmentation_loss

NAMES = ["sky", "road", "car"]


def logits_with_probabilities(probabilities: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits (1 x 2 x 1 x N) whose true class (0) has the given probabilities."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    logits = torch.stack([torch.log(p), torch.log1p(-p)]).float()
    return logits.view(1, 2, 1, -1), torch.zeros(1, 1, len(probabilities), dtype=torch.long)


def random_batch(seed: int = 0, classes: int = 3) -> dict:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 6, 7, generator=generator) * 3
    scores = torch.randn(2, classes, 3, 4, generator=generator).tanh()
    masks = torch.randint(0, classes, (2, 6, 7), generator=generator)
    masks[0, 0, :4] = 255
    return {"logits": logits, "score_map": scores, "masks": masks}


def test_the_default_config_gives_exactly_the_old_loss():
    batch = random_batch()
    masks = batch.pop("masks")
    scores = F.interpolate(batch["score_map"] / 0.07, size=(6, 7), mode="bilinear")
    old_seg = F.cross_entropy(batch["logits"], masks, ignore_index=255)
    old = old_seg + 0.4 * F.cross_entropy(scores, masks, ignore_index=255)
    for losses in (
        segmentation_loss(batch, masks),
        segmentation_loss(batch, masks, **loss_arguments(DEFAULTS["train"], NAMES)),
    ):
        assert torch.equal(losses["loss_seg"], old_seg) and torch.equal(losses["loss"], old)


def test_ohem_keeps_the_pixels_below_the_threshold():
    logits, masks = logits_with_probabilities([0.9, 0.5, 0.99, 0.2, 0.6])
    masks[0, 0, 4] = 255  # ignored: never kept, whatever its probability
    kept = ohem_labels(logits, masks, thresh=0.7, min_kept=0)
    assert kept.view(-1).tolist() == [255, 0, 255, 0, 255]
    loss = segmentation_loss({"logits": logits}, masks, loss="ohem", ohem_min_kept=0)["loss"]
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.2)) / 2, rel=1e-5)


def test_ohem_keeps_at_least_min_kept_hardest_per_image():
    logits, masks = logits_with_probabilities([0.9, 0.95, 0.8, 0.99, 0.85])
    assert ohem_labels(logits, masks, 0.1, min_kept=2).view(-1).tolist() == [255, 255, 0, 255, 0]
    # Per image: two images of min_kept 1 keep the two hardest of the batch.
    both = ohem_labels(logits.repeat(2, 1, 1, 1), masks.repeat(2, 1, 1), 0.1, min_kept=1)
    assert (both != 255).sum().item() == 2
    # More than there are: every labelled pixel.
    assert torch.equal(ohem_labels(logits, masks, 0.1, min_kept=99), masks)


def test_ohem_keeping_everything_is_plain_cross_entropy():
    batch = random_batch()
    masks = batch.pop("masks")
    weight = [0.5, 2.0, 1.0]
    for class_weight in (None, weight):
        plain = segmentation_loss(batch, masks, class_weight=class_weight)
        args = {"loss": "ohem", "ohem_thresh": 1.0, "ohem_min_kept": masks[0].numel()}
        ohem = segmentation_loss(batch, masks, class_weight=class_weight, **args)
        assert torch.equal(plain["loss"], ohem["loss"])


def test_ohem_samples_the_main_loss_only_and_easy_pixels_get_no_gradient():
    batch = random_batch()
    masks = batch.pop("masks")
    logits = batch["logits"].requires_grad_()
    plain = segmentation_loss(batch, masks)
    ohem = segmentation_loss(batch, masks, loss="ohem", ohem_thresh=0.5, ohem_min_kept=3)
    assert torch.equal(plain["loss_aux"], ohem["loss_aux"])
    assert not torch.equal(plain["loss_seg"], ohem["loss_seg"])
    ohem["loss_seg"].backward()
    kept = ohem_labels(logits.detach(), masks, 0.5, 3) != 255
    assert 6 <= kept.sum() < (masks != 255).sum()
    moved = logits.grad.abs().sum(1) > 0
    assert torch.equal(moved, kept)


def test_class_weights_weigh_as_torch_does():
    batch = random_batch()
    masks = batch.pop("masks")
    weight = [0.2, 3.0, 1.0]
    losses = segmentation_loss(batch, masks, class_weight=weight)
    expected = F.cross_entropy(batch["logits"], masks, torch.tensor(weight), ignore_index=255)
    assert torch.equal(losses["loss_seg"], expected)
    assert not torch.equal(losses["loss_seg"], segmentation_loss(batch, masks)["loss_seg"])
    assert torch.equal(losses["loss_aux"], segmentation_loss(batch, masks)["loss_aux"])


def test_ohem_with_class_weights_weighs_the_kept_pixels():
    batch = random_batch()
    masks = batch.pop("masks")
    weight = torch.tensor([0.2, 3.0, 1.0])
    losses = segmentation_loss(
        batch, masks, loss="ohem", class_weight=weight.tolist(), ohem_min_kept=2
    )
    kept = ohem_labels(batch["logits"], masks, 0.7, 2)
    expected = F.cross_entropy(batch["logits"], kept, weight, ignore_index=255)
    assert torch.equal(losses["loss_seg"], expected)


def test_loss_arguments_read_the_config_and_check_the_weights():
    train = {**DEFAULTS["train"], "loss": "ohem", "class_weight": [1.0, 2.0, 0.5]}
    arguments = loss_arguments(train, NAMES)
    assert arguments["loss"] == "ohem" and arguments["class_weight"] == [1.0, 2.0, 0.5]
    assert set(arguments) <= set(segmentation_loss.__code__.co_varnames)
    with pytest.raises(ClipfuseError, match="has 2 entries: expected 3, one per class .*sky"):
        loss_arguments({**train, "class_weight": [1.0, 2.0]}, NAMES)
    with pytest.raises(ClipfuseError, match="'balanced': expected it resolved"):
        loss_arguments({**train, "class_weight": "balanced"}, NAMES)
