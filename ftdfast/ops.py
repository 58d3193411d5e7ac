"""Public entry points of the native ops, with a pure-PyTorch fallback.

Each function calls ``torch.ops.ftdfast.<name>`` when the extension is built
and has a kernel for the inputs' device and dtype, and the matching
``ftdfast.reference`` function otherwise. Index letters: n sample,
t position, i in (features), o out (features).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ftdfast import _ext
from ftdfast.reference import _check_sq_grad_sum_conv, sq_grad_sum_conv_ref, sq_grad_sum_linear_ref

_NATIVE_DTYPES = (torch.float32, torch.float64)


def sq_grad_sum_linear(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """S (o, i) = sum_n (g_n.T @ a_n) ** 2 for a (n, t, i) and g (n, t, o).

    The per-sample squared weight gradients of a linear layer, summed over
    samples, without materialising an (n, o, i) tensor. The native kernel
    handles float32/float64 without autograd; other float dtypes, devices
    without a kernel, and inputs that need gradients use
    :func:`ftdfast.reference.sq_grad_sum_linear_ref` (differentiable).
    """
    if (
        _ext.HAS_NATIVE
        and not (torch.is_grad_enabled() and (a.requires_grad or g.requires_grad))
        and a.dtype in _NATIVE_DTYPES
        and (a.dtype, a.device) == (g.dtype, g.device)  # else the reference raises a clear error
        and _ext.has_kernel("ftdfast::sq_grad_sum_linear", a.device)
    ):
        return torch.ops.ftdfast.sq_grad_sum_linear(a, g)
    return sq_grad_sum_linear_ref(a, g)



def sq_grad_sum_conv(input: torch.Tensor, grad_output: torch.Tensor, weight_shape: Sequence[int],
                     stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                     groups: int) -> torch.Tensor:
    """S (weight_shape) = sum_n G_n * G_n for a Conv1d/2d/3d (not transposed, zero padding).

    ``G_n`` is the weight gradient of sample n alone, given the layer input
    (n, C_in, *spatial) and output gradient (n, C_out, *spatial_out);
    ``weight_shape`` is (C_out, C_in / groups, *kernel). The native kernel
    handles float32/float64 without autograd; other float dtypes, devices
    without a kernel, and inputs that need gradients use
    :func:`ftdfast.reference.sq_grad_sum_conv_ref` (differentiable).
    """
    args = ([int(s) for s in weight_shape], [int(s) for s in stride], [int(s) for s in padding],
            [int(s) for s in dilation], int(groups))
    if (
        _ext.HAS_NATIVE
        and not (torch.is_grad_enabled() and (input.requires_grad or grad_output.requires_grad))
        and input.dtype in _NATIVE_DTYPES
        and (input.dtype, input.device) == (grad_output.dtype, grad_output.device)
        and _ext.has_kernel("ftdfast::sq_grad_sum_conv", input.device)
    ):
        return torch.ops.ftdfast.sq_grad_sum_conv(input, grad_output, *args)
    return sq_grad_sum_conv_ref(input, grad_output, *args)


if _ext.HAS_NATIVE:

    @torch.library.register_fake("ftdfast::sq_grad_sum_linear")
    def _sq_grad_sum_linear_fake(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        torch._check(a.dim() == 3, lambda: f"ftdfast: a (n, t, i) must be 3-D, got {a.dim()}-D")
        torch._check(g.dim() == 3, lambda: f"ftdfast: g (n, t, o) must be 3-D, got {g.dim()}-D")
        torch._check(a.shape[0] == g.shape[0], lambda: "ftdfast: a and g must agree on dim 0 = n (samples)")
        torch._check(a.shape[1] == g.shape[1], lambda: "ftdfast: a and g must agree on dim 1 = t (positions)")
        torch._check(a.dtype == g.dtype, lambda: "ftdfast: a and g must have the same dtype")
        return a.new_empty((g.shape[2], a.shape[2]))

    @torch.library.register_fake("ftdfast::sq_grad_sum_conv")
    def _sq_grad_sum_conv_fake(input, grad_output, weight_shape, stride, padding, dilation, groups):
        _check_sq_grad_sum_conv(input, grad_output, weight_shape, stride, padding, dilation, groups)
        torch._check(input.dtype in _NATIVE_DTYPES,
                     lambda: f"ftdfast: input must have dtype float32 or float64, got {input.dtype}")
        return input.new_empty(list(weight_shape))
