"""Cost of a model: GMACs (the paper's "GFLOPs") and parameters (docs/research/method.md Sec. 5).

Counting uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per
multiply-accumulate of convolutions, matrix products and fused attention (not norms,
activations or element-wise ops); MACs are FLOPs / 2. On CPU ``F.scaled_dot_product_attention``
dispatches to ``aten._scaled_dot_product_flash_attention_for_cpu``, for which PyTorch has no
formula (it would count 0): importing this module registers one (and one for its backward),
the same as PyTorch's for the GPU kernels: ``Q K^T`` plus ``softmax(.) V``.

Backward: PyTorch's formula for ``aten.convolution_backward`` counts the weight gradient of a
grouped convolution ``groups`` times too many (the backward of a depthwise convolution of C
channels came out at (1 + C)x its forward instead of 2x, torch 2.14.1). :func:`flop_counter`, the counter every count here
uses, counts each gradient of a convolution as many FLOPs as its forward instead.

Groups: ``FlopCounterMode.get_flop_counts()`` keys its counts by module path, written
``<class name of the root>.<name in named_modules()>`` (e.g. ``Segmentor.backbone``), each
including its submodules. A group given as a submodule of ``model`` is looked up under that
key; its parameters are those of the submodule.
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_flop_count,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from clipfuse.errors import ClipfuseError

_aten = torch.ops.aten
_CPU_SDPA = _aten._scaled_dot_product_flash_attention_for_cpu
_CPU_SDPA_BACKWARD = _aten._scaled_dot_product_flash_attention_for_cpu_backward


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU fused attention (B x heads x L x E layout), causal masks ignored."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    """FLOPs of the CPU fused attention's backward."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


if _CPU_SDPA not in flop_registry:
    register_flop_formula(_CPU_SDPA)(_cpu_sdpa_flop)
if _CPU_SDPA_BACKWARD not in flop_registry:
    register_flop_formula(_CPU_SDPA_BACKWARD)(_cpu_sdpa_backward_flop)


def _conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
    **kwargs,
) -> int:
    """FLOPs of a convolution's backward: the input gradient and the weight gradient (those of
    ``output_mask``) each take one multiply-add per output element and weight of its group,
    as the forward does."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def flop_counter() -> FlopCounterMode:
    """A :class:`FlopCounterMode` (no display) that counts a grouped convolution's weight
    gradient once (:func:`_conv_backward_flop`)."""
    return FlopCounterMode(
        display=False, custom_mapping={_aten.convolution_backward: _conv_backward_flop}
    )


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not), shared ones once."""
    return sum(parameter.numel() for parameter in module.parameters())


def _inputs(model: nn.Module, input_shape: Sequence) -> list[torch.Tensor]:
    """Zero tensors on the model's device: one for a shape, one per shape for a tuple of them."""
    shapes = [input_shape] if all(isinstance(size, int) for size in input_shape) else input_shape
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    return [torch.zeros(tuple(shape), device=device) for shape in shapes]


def count_macs(
    model: nn.Module,
    input_shape: Sequence,
    groups: dict[str, nn.Module] | None = None,
) -> dict:
    """GMACs of one forward pass (eval mode, no grad) and parameters in millions.

    Args:
        model: called as ``model(*inputs)``.
        input_shape: one shape (e.g. ``(1, 3, 512, 512)``), or a tuple of shapes for a model
            taking several tensors (e.g. ``((1, 512, 16, 16), (1, 150, 512))``); inputs are
            zeros.
        groups: name -> submodule of ``model`` (e.g. ``{"backbone": model.backbone}``).

    Returns:
        ``{"gmacs": float, "params_m": float, "groups": {name: {"gmacs", "params_m"}}}``; when
        groups are given, ``groups["other"]`` holds what no group covers.
    """
    groups = groups or {}
    module_names = {id(module): name for name, module in model.named_modules()}
    root = type(model).__name__
    keys = {}
    if "other" in groups:
        raise ClipfuseError("count_macs: the group name 'other' is reserved for the rest")
    for name, module in groups.items():
        if id(module) not in module_names:
            raise ClipfuseError(f"count_macs: group {name!r} is not a submodule of the model")
        path = module_names[id(module)]
        keys[name] = f"{root}.{path}" if path else root

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flop_counter() as counter:
            model(*_inputs(model, input_shape))
    finally:
        model.train(was_training)

    counts = counter.get_flop_counts()
    flops = {name: sum(counts.get(key, {}).values()) for name, key in keys.items()}
    params = {name: count_params(module) for name, module in groups.items()}
    if groups:
        flops["other"] = counter.get_total_flops() - sum(flops.values())
        params["other"] = count_params(model) - sum(params.values())
    return {
        "gmacs": counter.get_total_flops() / 2e9,
        "params_m": count_params(model) / 1e6,
        "groups": {
            name: {"gmacs": flops[name] / 2e9, "params_m": params[name] / 1e6} for name in flops
        },
    }
