"""What ``clipfuse flops`` reports: GMACs and parameters per part of a model."""

from collections.abc import Sequence

from clipfuse.analysis.flops import count_macs
from clipfuse.models import Segmentor


def segmentor_cost(model: Segmentor, height: int, width: int) -> dict:
    """GMACs and parameters of one image at ``height x width``, split into backbone /
    fusion (the language head: Conv-Former or DenseCLIP's pool and context decoder) / decoder.

    The text encoder is not included: it runs once per vocabulary, not per image.
    """
    groups = {"backbone": model.backbone, "decoder": model.decoder}
    if model.head is not None:
        groups["fusion"] = model.head
    return count_macs(model, (1, 3, height, width), groups=groups)


def evaluation_size(config: dict) -> tuple[int, int]:
    """The (H, W) the model of ``config`` sees when it is evaluated: ``eval.crop_size`` with
    ``eval.mode: slide`` (its windows), else ``data.val_size`` (a short side: the crop size's
    aspect at that short side), else the training ``data.crop_size`` (validation at full
    resolution has no one size)."""
    if config["eval"]["mode"] == "slide":
        height, width = config["eval"]["crop_size"]
        return int(height), int(width)
    height, width = config["data"]["crop_size"]
    val_size = config["data"]["val_size"]
    if isinstance(val_size, int):
        scale = val_size / min(height, width)
        return round(height * scale), round(width * scale)
    if val_size is not None:
        height, width = val_size
    return int(height), int(width)


def config_cost(config: dict, size: Sequence[int] | None = None) -> dict:
    """:func:`segmentor_cost` of the model of ``config`` (random weights) at ``size`` (H, W;
    default: :func:`evaluation_size`), with the method, backbone, size and number of classes."""
    from clipfuse.build import class_names_of, cost_model

    size = size or evaluation_size(config)
    class_names = class_names_of(config)
    cost = segmentor_cost(cost_model(config, class_names), *size)
    cost.update(
        method=config["model"]["method"],
        backbone=config["model"]["backbone"],
        size=list(size),
        num_classes=len(class_names),
    )
    return cost


def format_cost(cost: dict) -> str:
    """The table ``clipfuse flops`` prints for a :func:`config_cost` result."""
    height, width = cost["size"]
    lines = [
        f"{cost['method']} + {cost['backbone']}, {height}x{width}, K={cost['num_classes']}",
        f"{'part':<10}{'GMACs':>10}{'params (M)':>12}",
    ]
    for name, part in cost["groups"].items():
        lines.append(f"{name:<10}{part['gmacs']:>10.2f}{part['params_m']:>12.2f}")
    lines.append(f"{'total':<10}{cost['gmacs']:>10.2f}{cost['params_m']:>12.2f}")
    return "\n".join(lines)
