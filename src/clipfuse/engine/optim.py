"""Optimiser and schedule of the paper's recipe (docs/research/method.md Sec. 5).

Backbone learning rate = ``backbone_lr_mult`` x the rest, the language head's (``head.*``: the
Conv-Former or DenseCLIP modules, all freshly initialised) ``head_lr_mult`` x the rest [choice,
1 = the paper; mmseg trains SegFormer's head at x10]; no weight decay on normalisation
layers and biases; poly decay (power 0.9) after a linear warm-up, stepped every iteration.
"""

import torch
from torch import nn

from clipfuse.errors import ClipfuseError

_NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float,
    head_lr_mult: float = 1.0,
) -> list[dict]:
    """Up to six groups: (decoder, language head, backbone) x (decayed or not), the decoder's
    decayed group first (its learning rate is the one logged). Frozen parameters are left
    out."""
    no_decay: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) or name.endswith("bias") or parameter.ndim <= 1:
                no_decay.add(id(parameter))
    parts = {"backbone.": ("backbone", backbone_lr_mult), "head.": ("language_head", head_lr_mult)}
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = next((i + 1 for i, prefix in enumerate(parts) if name.startswith(prefix)), 0)
        groups.setdefault((part, id(parameter) in no_decay), []).append(parameter)
    names_and_mults = [("decoder", 1.0), *parts.values()]
    return [
        {
            "params": params,
            "lr": lr * names_and_mults[part][1],
            "weight_decay": 0.0 if is_no_decay else weight_decay,
            "name": f"{names_and_mults[part][0]}{'_no_decay' if is_no_decay else ''}",
        }
        for (part, is_no_decay), params in sorted(groups.items())
    ]


def create_optimizer(
    model: nn.Module,
    optimizer: str = "sgd",
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    backbone_lr_mult: float = 0.1,
    head_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """SGD (momentum) for CNN backbones, AdamW for transformer backbones."""
    groups = parameter_groups(model, lr, weight_decay, backbone_lr_mult, head_lr_mult)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ClipfuseError(f"unknown optimizer {optimizer!r}: expected sgd or adamw")


class PolyWithWarmup:
    """Learning-rate factor: linear warm-up to 1 over ``warmup_steps``, then (1 - t/T)^power."""

    def __init__(self, max_steps: int, warmup_steps: int = 0, power: float = 0.9) -> None:
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        self.power = power

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(step, self.max_steps) / max(1, self.max_steps)
        return (1.0 - progress) ** self.power
