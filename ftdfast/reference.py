"""Pure-PyTorch reference implementations of the native ops.

They are the fallback when ``ftdfast._C`` is missing (or has no kernel for a
device) and the oracle the native kernels are tested against.

Index letters: n sample, t position, i in (features), o out (features).
"""

from __future__ import annotations

from typing import Optional

import torch

from .workspace import workspace_elements


def _check_sq_grad_sum_linear(a: torch.Tensor, g: torch.Tensor) -> None:
    """Same checks, and the same wording, as the native kernel."""
    for x, name in ((a, "a (n, t, i)"), (g, "g (n, t, o)")):
        if x.dim() != 3:
            raise RuntimeError(f"ftdfast: {name} must be 3-D, got a {x.dim()}-D tensor of shape {list(x.shape)}")
    for d, what in ((0, "n (samples)"), (1, "t (positions)")):
        if a.shape[d] != g.shape[d]:
            raise RuntimeError(
                f"ftdfast: a and g must agree on dim {d} = {what}, got {a.shape[d]} and {g.shape[d]} "
                f"(shapes {list(a.shape)} and {list(g.shape)})"
            )
    for x, name in ((a, "a"), (g, "g")):
        if not x.is_floating_point():
            raise RuntimeError(f"ftdfast: {name} must have a floating dtype, got {x.dtype}")
    if a.dtype != g.dtype:
        raise RuntimeError(f"ftdfast: a and g must have the same dtype, got {a.dtype} and {g.dtype}")
    if a.device != g.device:
        raise RuntimeError(f"ftdfast: a and g must be on the same device, got {a.device} and {g.device}")


def sq_grad_sum_linear_ref(a: torch.Tensor, g: torch.Tensor, *,
                           max_chunk_elems: Optional[int] = None) -> torch.Tensor:
    """Sum over samples of the squared per-sample weight gradient of a linear layer.

    Args:
        a: layer inputs, shape (n, t, i).
        g: gradients w.r.t. the layer outputs, shape (n, t, o); same dtype and device as ``a``.
        max_chunk_elems: bound on chunk * o * i, the size of the per-sample
            gradient block computed at once (default: ``FTDFAST_WORKSPACE_MB``).

    Returns:
        S of shape (o, i), dtype of the inputs, with
        ``S[o, i] = sum_n (sum_t g[n, t, o] * a[n, t, i]) ** 2``,
        i.e. ``sum_n G_n ** 2`` for ``G_n = g_n.T @ a_n``.

    For t == 1 this is one GEMM of the squares, ``(g * g).T @ (a * a)``;
    otherwise samples are processed in chunks with ``bmm``, so memory stays
    bounded by ``max_chunk_elems`` rather than n * o * i.
    """
    _check_sq_grad_sum_linear(a, g)
    n, t, i = a.shape
    o = g.shape[2]
    if n == 0 or t == 0:
        return a.new_zeros((o, i))
    if t == 1:
        return g[:, 0, :].square().T @ a[:, 0, :].square()
    if max_chunk_elems is None:
        max_chunk_elems = workspace_elements(a.dtype)
    chunk = max(1, max_chunk_elems // max(1, o * i))
    out = a.new_zeros((o, i))
    for start in range(0, n, chunk):
        grads = torch.bmm(g[start : start + chunk].transpose(1, 2), a[start : start + chunk])  # (c, o, i)
        out += grads.square_().sum(0)
    return out
