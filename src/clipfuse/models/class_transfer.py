"""Weights of a trained model carried to a model of other classes (``train.init_from``):
fine-tuning on a new dataset, as mmsegmentation's ``load_from`` but class-aware.

A tensor whose shape follows the number of classes K has a *class axis*: the decoder's
classifier (K outputs) and, for language-guided methods, every layer that reads the score map
S (its K input channels follow the head's image channels, ``concat[I', S]``). Along that axis a
class of the new model takes its source class's slice; a new class keeps its fresh
initialisation; every other entry, and every tensor without a class axis, is copied.
"""

from collections.abc import Mapping, Sequence

import torch

from clipfuse.errors import ClipfuseError

ClassAxes = Mapping[str, tuple[int, int]]
"""Tensor name -> (dim, offset): its K classes are entries ``offset .. offset + K - 1`` of dim."""


def transfer_state(
    fresh: Mapping[str, torch.Tensor],
    source: Mapping[str, torch.Tensor],
    class_axes: ClassAxes,
    source_classes: Sequence[int | None],
    where: str,
) -> dict[str, torch.Tensor]:
    """The state of the new model (``fresh``: its own initialisation, K classes) filled from
    ``source`` (K' classes). ``source_classes[k]`` is the source class of new class k, or None
    (it keeps its fresh slice). ``where`` names the source in errors (a one-line
    :class:`ClipfuseError` for a tensor missing, extra or of another shape: another model)."""
    missing = sorted(set(fresh) - set(source))
    extra = sorted(set(source) - set(fresh))
    if missing or extra:
        first = (missing or extra)[0]
        side = "lacks" if missing else "has the extra tensor"
        raise ClipfuseError(
            f"{where} {side} {first} ({len(missing)} missing, {len(extra)} extra): expected "
            "a model of the same method, backbone, decoder and options"
        )
    state = {}
    for name, tensor in fresh.items():
        old = source[name]
        if name not in class_axes:
            if old.shape != tensor.shape:
                raise ClipfuseError(
                    f"{where}: tensor {name} has shape {tuple(old.shape)}, expected "
                    f"{tuple(tensor.shape)}: a model of the same architecture"
                )
            state[name] = old.to(tensor.dtype)
            continue
        state[name] = _transfer_classes(tensor, old, class_axes[name], source_classes, where, name)
    return state


def _transfer_classes(
    tensor: torch.Tensor,
    old: torch.Tensor,
    axis: tuple[int, int],
    source_classes: Sequence[int | None],
    where: str,
    name: str,
) -> torch.Tensor:
    dim, offset = axis
    classes = len(source_classes)
    rest = tensor.shape[dim] - offset - classes  # entries after the classes
    old_classes = old.shape[dim] - offset - rest
    other_dims = [size for d, size in enumerate(tensor.shape) if d != dim]
    if old_classes < 1 or [s for d, s in enumerate(old.shape) if d != dim] != other_dims:
        raise ClipfuseError(
            f"{where}: tensor {name} has shape {tuple(old.shape)}, which does not fit "
            f"{tuple(tensor.shape)} with other classes: a model of the same architecture"
        )
    new = tensor.clone()
    old = old.to(tensor.dtype)
    new.narrow(dim, 0, offset).copy_(old.narrow(dim, 0, offset))
    new.narrow(dim, offset + classes, rest).copy_(old.narrow(dim, offset + old_classes, rest))
    for k, j in enumerate(source_classes):
        if j is not None:
            if not 0 <= j < old_classes:
                raise ClipfuseError(f"{where}: source class {j} of {old_classes} does not exist")
            new.select(dim, offset + k).copy_(old.select(dim, offset + j))
    return new
