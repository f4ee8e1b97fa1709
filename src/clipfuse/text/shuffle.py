"""``text.shuffle``: the shuffled-CLIP control. Each class gets the CLIP vector of another
class (a seeded derangement of the class list): the geometry and the norms of CLIP's vectors
stay, their meaning for these classes goes. Compare with ``random:<dim>`` (no geometry either).
"""

import torch

from clipfuse.errors import ClipfuseError


def derangement(num_classes: int, draw: int) -> torch.Tensor:
    """A permutation of ``range(num_classes)`` with no fixed point, the same for the same
    ``draw`` (uniform over derangements: permutations are drawn until one qualifies)."""
    if num_classes < 2:
        raise ClipfuseError(
            f"text.shuffle needs at least 2 classes to give each another's vector, got {num_classes}"
        )
    generator = torch.Generator().manual_seed(int(draw))
    # on the CPU whatever the default device (a model built on "meta" still needs real indices)
    identity = torch.arange(num_classes, device="cpu")
    while True:
        order = torch.randperm(num_classes, generator=generator, device="cpu")
        if not (order == identity).any():
            return order
