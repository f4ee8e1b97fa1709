"""Aliases: user class names mapped to the names an encoder or bank knows (docs/research/method.md
Sec. 1).

Dataset class lists do not always use CLIP-friendly names; CamVid's, for instance, are read
from the ADE20K bank through :data:`CAMVID_ALIASES`.
"""

from collections.abc import Mapping, Sequence

from clipfuse.text.base import normalize_name

CAMVID_ALIASES: dict[str, str] = {
    "Pavement": "sidewalk",
    "Pedestrian": "person",
    "SignSymbol": "signboard",
    "Bicyclist": "bicycle",
}
"""CamVid's 11 classes in the ADE20K bank: the other seven (Sky, Building, Pole, Road, Tree,
Fence, Car) are ADE20K names already."""


def apply_aliases(names: Sequence[str], aliases: Mapping[str, str] | None) -> list[str]:
    """Replace each name whose normalised form is an alias key by its target; keep the rest."""
    if not aliases:
        return list(names)
    lookup = {normalize_name(source): target for source, target in aliases.items()}
    return [lookup.get(normalize_name(name), name) for name in names]
