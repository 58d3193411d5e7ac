"""Public entry points of the native ops, with a pure-PyTorch fallback.

Each function calls ``torch.ops.ftdfast.<name>`` when the extension is built,
has a kernel for the inputs' device and dtype, and that kernel passed its
first-use self-check (:mod:`ftdfast.native.selfcheck`), and the matching
``ftdfast.native.reference`` function otherwise. Index letters: n sample,
t position, i in (features), o out (features).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ftdfast.native import _ext, selfcheck
from ftdfast.native.reference import (
    SPECS,
    fisher_distance_matrix_ref,
    fisher_distance_ref,
    sq_grad_sum_conv_ref,
    sq_grad_sum_linear_ref,
)

_NATIVE_DTYPES = (torch.float32, torch.float64)


def _use_native(op: str, tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the native ``op`` takes these inputs: built, one float32/float64 dtype and one device for all,
    no gradient needed (the native ops have no autograd formula), a kernel for that device which passed its
    first-use self-check for this device and dtype (:func:`ftdfast.native.selfcheck.native_ok`)."""
    if not (_ext.HAS_NATIVE and tensors):
        return False
    first = tensors[0]
    device, dtype = first.device, first.dtype
    return (
        dtype in _NATIVE_DTYPES
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and all(t.dtype == dtype and t.device == device for t in tensors)
        and selfcheck.native_ok(op, first, device, dtype)
    )


def sq_grad_sum_linear(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """S (o, i) = sum_n (g_n.T @ a_n) ** 2 for a (n, t, i) and g (n, t, o).

    The per-sample squared weight gradients of a linear layer, summed over
    samples, without materialising an (n, o, i) tensor. The native kernel
    handles float32/float64 without autograd; other float dtypes, devices
    without a kernel, and inputs that need gradients use
    :func:`ftdfast.native.reference.sq_grad_sum_linear_ref` (differentiable).
    """
    if _use_native("ftdfast::sq_grad_sum_linear", [a, g]):
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
    :func:`ftdfast.native.reference.sq_grad_sum_conv_ref` (differentiable).
    """
    args = ([int(s) for s in weight_shape], [int(s) for s in stride], [int(s) for s in padding],
            [int(s) for s in dilation], int(groups))
    if _use_native("ftdfast::sq_grad_sum_conv", [input, grad_output]):
        return torch.ops.ftdfast.sq_grad_sum_conv(input, grad_output, *args)
    return sq_grad_sum_conv_ref(input, grad_output, *args)


def fisher_distance(f_a: Sequence[torch.Tensor], f_b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fisher Task Distance d (0-dim tensor, in [0, 1]) between two diagonal Fishers.

    ``f_a`` and ``f_b`` are equally long lists of non-negative per-parameter
    Fisher diagonals, ``f_a[k]`` and ``f_b[k]`` of the same (any) shape::

        d = || sqrt(f_a / tr f_a) - sqrt(f_b / tr f_b) ||_2 / sqrt(2)

    with ``tr`` the sum over every tensor of the list. Symmetric, invariant to
    scaling either Fisher, 0 for proportional inputs and 1 for disjoint
    supports. The native kernel handles float32/float64 (accumulating in
    float64, no concatenated copy) without autograd; other float dtypes,
    devices without a kernel, empty lists and inputs that need gradients use
    :func:`ftdfast.native.reference.fisher_distance_ref`.
    """
    f_a, f_b = list(f_a), list(f_b)
    tensors = f_a + f_b
    if len(f_a) == len(f_b) and _use_native("ftdfast::fisher_distance", tensors):  # else the reference raises
        return torch.ops.ftdfast.fisher_distance(f_a, f_b)
    return fisher_distance_ref(f_a, f_b)


def fisher_distance_matrix(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """All pairwise Fisher Task Distances D (R, C) between rows (R, P) and cols (C, P).

    Each row of ``rows`` and ``cols`` is a non-negative, flattened Fisher
    diagonal (e.g. ``torch.cat([f.reshape(-1) for f in fisher])``), and
    ``D[r, c] = fisher_distance([rows[r]], [cols[c]])``, computed with the
    Hellinger identity ``d^2 = 1 - <sqrt(p_r), sqrt(q_c)>`` as one GEMM and
    clamped to [0, 1]. Near d = 0 the identity loses precision (about
    sqrt(1e-16) = 1e-8 absolute, in float64 internally); use
    :func:`fisher_distance` for a single accurate small distance. The native
    kernel handles float32/float64 without autograd; other cases use
    :func:`ftdfast.native.reference.fisher_distance_matrix_ref`.
    """
    if _use_native("ftdfast::fisher_distance_matrix", [rows, cols]):
        return torch.ops.ftdfast.fisher_distance_matrix(rows, cols)
    return fisher_distance_matrix_ref(rows, cols)


if _ext.HAS_NATIVE:
    for _spec in SPECS.values():  # the fake kernels: shapes for torch.compile, meta tensors and opcheck
        torch.library.register_fake(_spec.qualname)(_spec.fake)
