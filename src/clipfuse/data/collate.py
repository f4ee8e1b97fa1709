"""Evaluation batches of images of different sizes: grouped by size, never padded.

Real datasets mix image sizes (CCP's photos are 550 wide and 826, 843, ... high), so the
evaluation loader cannot stack a batch into one tensor. Padding would stack it, but the model
sees the padding: the logits near the right and bottom borders, and the stride rounding of the
backbone, would then depend on which images share the batch, and the metrics on
``data.val_batch_size``. Grouping keeps every forward pass at an image's own size: the metrics
are those of ``val_batch_size=1`` whatever the batch size; a batch of equal sizes is one group.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor
from torch.utils.data import default_collate


@dataclass
class SizeGroups:
    """One evaluation batch: a ``(images B x 3 x h x w, masks B x H x W)`` pair per distinct
    (image size, mask size), in order of first appearance. (A dataclass, not a tuple: Lightning
    moves its tensors to the device, and it cannot be unpacked as a training batch by mistake.)
    """

    groups: list[tuple[Tensor, Tensor]]


def collate_by_size(samples: Sequence[tuple[Tensor, Tensor]]) -> SizeGroups:
    """The ``(image, mask)`` samples of a batch stacked per size (image and mask size both
    count: with ``data.val_size`` set, equal inputs may come from masks of different sizes)."""
    by_size: dict[tuple[tuple[int, ...], tuple[int, ...]], list[tuple[Tensor, Tensor]]] = {}
    for image, mask in samples:
        by_size.setdefault((tuple(image.shape), tuple(mask.shape)), []).append((image, mask))
    return SizeGroups([default_collate(group) for group in by_size.values()])
