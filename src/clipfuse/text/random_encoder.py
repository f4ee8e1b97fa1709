"""``random:<dim>[:<seed>]``: fixed random unit vectors, the no-language ablation
(docs/research/method.md Sec. 4, "text = random").

Each vector depends only on the normalised class name and the seed (through a SHA-256
hash), so a name gets the same vector in any class list and any order. The prompt template
is ignored.
"""

import hashlib

import torch

from clipfuse.errors import ClipfuseError
from clipfuse.text.base import TextEncoder, normalize_name


class RandomEncoder(TextEncoder):
    """Unit vectors drawn from N(0, I) seeded by ``sha256(f"{seed}:{normalised name}")``."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        if dim < 1:
            raise ClipfuseError(f"text encoder 'random:{dim}': expected a positive dimension")
        self.dim = dim
        self.seed = seed
        self.spec = f"random:{dim}:{seed}"

    @classmethod
    def from_spec(cls, argument: str) -> "RandomEncoder":
        return cls(*_parse(argument))

    @classmethod
    def spec_width(cls, argument: str) -> int:
        """``<dim>``."""
        return _parse(argument)[0]

    def vector(self, name: str) -> torch.Tensor:
        """The unit vector of one class name."""
        digest = hashlib.sha256(f"{self.seed}:{normalize_name(name)}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        vector = torch.randn(self.dim, generator=generator)
        return vector / vector.norm()

    def _encode(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        return torch.stack([self.vector(name) for name in class_names])


def _parse(argument: str) -> tuple[int, ...]:
    """``(dim,)`` or ``(dim, seed)`` of ``random:<dim>[:<seed>]``; a one-line error otherwise."""
    parts = argument.split(":")
    try:
        if len(parts) > 2:
            raise ValueError(argument)
        return tuple(int(part) for part in parts)
    except ValueError as error:
        raise ClipfuseError(
            f"text encoder 'random:{argument}': expected random:<dim> or random:<dim>:<seed> "
            "with integers, e.g. random:512 or random:512:1"
        ) from error
