"""Pure-PyTorch reference implementations of the native ops.

They are the fallback when ``ftdfast._C`` is missing (or has no kernel for a
device) and the oracle the native kernels are tested against.

Index letters: n sample, t position, i in (features), o out (features).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..workspace import chunk_size, workspace_elements


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


def _check_sq_grad_sum_conv(x: torch.Tensor, gy: torch.Tensor, weight_shape: Sequence[int],
                            stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                            groups: int) -> None:
    """Same checks, and the same wording, as the native kernel."""
    if not 3 <= x.dim() <= 5:
        raise RuntimeError(
            "ftdfast: input (n, C_in, *spatial) must be 3-D, 4-D or 5-D (Conv1d/2d/3d), "
            f"got a {x.dim()}-D tensor of shape {list(x.shape)}")
    d = x.dim() - 2
    if gy.dim() != x.dim():
        raise RuntimeError(f"ftdfast: grad_output (n, C_out, *spatial_out) must be {x.dim()}-D, "
                           f"got a {gy.dim()}-D tensor of shape {list(gy.shape)}")
    ws = list(weight_shape)
    if len(ws) != d + 2:
        raise RuntimeError(f"ftdfast: weight_shape must have {d + 2} entries (C_out, C_in / groups, *kernel) "
                           f"for a {d}-D convolution, got {ws}")
    for name, v in (("stride", stride), ("padding", padding), ("dilation", dilation)):
        if len(v) != d:
            raise RuntimeError(f"ftdfast: {name} must have {d} entries, got {list(v)}")
    if groups <= 0:
        raise RuntimeError(f"ftdfast: groups must be positive, got {groups}")
    for j in range(d):
        if stride[j] <= 0:
            raise RuntimeError(f"ftdfast: stride must be positive, got {list(stride)}")
        if padding[j] < 0:
            raise RuntimeError(f"ftdfast: padding must be non-negative, got {list(padding)}")
        if dilation[j] <= 0:
            raise RuntimeError(f"ftdfast: dilation must be positive, got {list(dilation)}")
        if ws[2 + j] <= 0:
            raise RuntimeError(f"ftdfast: kernel sizes (weight_shape[2:]) must be positive, got {ws}")
    if ws[0] < 0 or ws[1] < 0:
        raise RuntimeError(f"ftdfast: weight_shape must be non-negative, got {ws}")
    if x.shape[0] != gy.shape[0]:
        raise RuntimeError(
            f"ftdfast: input and grad_output must agree on dim 0 = n (samples), got {x.shape[0]} and "
            f"{gy.shape[0]} (shapes {list(x.shape)} and {list(gy.shape)})")
    if x.shape[1] != ws[1] * groups:
        raise RuntimeError(f"ftdfast: input has {x.shape[1]} channels but weight_shape {ws} with groups = "
                           f"{groups} expects {ws[1] * groups} (C_in / groups = weight_shape[1])")
    if gy.shape[1] != ws[0]:
        raise RuntimeError(f"ftdfast: grad_output has {gy.shape[1]} channels but weight_shape {ws} has "
                           f"C_out = {ws[0]}")
    if ws[0] % groups:
        raise RuntimeError(f"ftdfast: C_out = weight_shape[0] = {ws[0]} must be divisible by groups = {groups}")
    for j in range(d):
        span = dilation[j] * (ws[2 + j] - 1) + 1
        padded = x.shape[2 + j] + 2 * padding[j]
        if padded < span:
            raise RuntimeError(
                f"ftdfast: input spatial dim {j} (size {x.shape[2 + j]} + 2 * padding {padding[j]}) is smaller "
                f"than the dilated kernel ({span}); input shape {list(x.shape)}, weight_shape {ws}")
        out = (padded - span) // stride[j] + 1
        if gy.shape[2 + j] != out:
            raise RuntimeError(
                f"ftdfast: grad_output spatial dim {j} is {gy.shape[2 + j]} but the convolution of input "
                f"{list(x.shape)} with weight_shape {ws}, stride {list(stride)}, padding {list(padding)}, "
                f"dilation {list(dilation)} gives {out} (grad_output shape {list(gy.shape)})")
    for t, name in ((x, "input"), (gy, "grad_output")):
        if not t.is_floating_point():
            raise RuntimeError(f"ftdfast: {name} must have a floating dtype, got {t.dtype}")
    if x.dtype != gy.dtype:
        raise RuntimeError(f"ftdfast: input and grad_output must have the same dtype, got {x.dtype} and {gy.dtype}")
    if x.device != gy.device:
        raise RuntimeError(
            f"ftdfast: input and grad_output must be on the same device, got {x.device} and {gy.device}")


def sq_grad_sum_conv_ref(input: torch.Tensor, grad_output: torch.Tensor, weight_shape: Sequence[int],
                         stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                         groups: int, *, max_chunk_elems: Optional[int] = None) -> torch.Tensor:
    """Sum over samples of the squared per-sample weight gradient of a convolution.

    Args:
        input: layer inputs, shape (n, C_in, *spatial) for a Conv1d/2d/3d (not transposed).
        grad_output: gradients w.r.t. the layer outputs, shape (n, C_out, *spatial_out);
            same dtype and device as ``input``.
        weight_shape: (C_out, C_in / groups, *kernel).
        stride, padding, dilation: one entry per spatial dimension; zero padding.
        groups: convolution groups.
        max_chunk_elems: bound on chunk * prod(weight_shape), the size of the
            per-sample gradient block computed at once (default: ``FTDFAST_WORKSPACE_MB``).

    Returns:
        S of shape ``weight_shape``, ``S = sum_n G_n * G_n`` with ``G_n`` the weight
        gradient of sample n alone (``convolution_backward`` on that sample).

    Samples are processed in chunks; per chunk one grouped ``convolution_backward``
    (samples become groups) gives every sample's weight gradient at once.
    """
    _check_sq_grad_sum_conv(input, grad_output, weight_shape, stride, padding, dilation, groups)
    ws = [int(s) for s in weight_shape]
    n = input.shape[0]
    numel = 1
    for s in ws:
        numel *= s
    out = input.new_zeros(ws)
    if n == 0 or numel == 0:
        return out
    if max_chunk_elems is None:
        step = chunk_size(numel, input.dtype)
    else:
        step = max(1, max_chunk_elems // numel)
    d = input.dim() - 2
    for start in range(0, n, step):
        stop = min(n, start + step)
        c = stop - start
        x = input[start:stop].reshape((1, -1) + tuple(input.shape[2:]))
        gy = grad_output[start:stop].reshape((1, -1) + tuple(grad_output.shape[2:]))
        dummy = input.new_empty([c * ws[0]] + ws[1:])
        grads = torch.ops.aten.convolution_backward(
            gy, x, dummy, None, list(stride), list(padding), list(dilation), False, [0] * d, groups * c,
            [False, True, False])[1]
        out = out + grads.reshape([c] + ws).square().sum(0)
    return out


def _check_fisher_distance(f_a: Sequence[torch.Tensor], f_b: Sequence[torch.Tensor]) -> None:
    """Same checks, and the same wording, as the native kernel (values are checked later)."""
    if len(f_a) != len(f_b):
        raise RuntimeError(
            f"ftdfast: f_a and f_b must have the same length (one tensor per parameter), got {len(f_a)} and {len(f_b)}")
    if not f_a:
        raise RuntimeError("ftdfast: f_a and f_b must not be empty (one tensor per parameter)")
    for k, (a, b) in enumerate(zip(f_a, f_b)):
        for t, name in ((a, f"f_a[{k}]"), (b, f"f_b[{k}]")):
            if not t.is_floating_point():
                raise RuntimeError(f"ftdfast: {name} must have a floating dtype, got {t.dtype}")
        for t, name in ((a, f"f_a[{k}]"), (b, f"f_b[{k}]")):
            if t.dtype != f_a[0].dtype:
                raise RuntimeError(
                    f"ftdfast: f_a[0] and {name} must have the same dtype, got {f_a[0].dtype} and {t.dtype}")
        for t, name in ((a, f"f_a[{k}]"), (b, f"f_b[{k}]")):
            if t.device != f_a[0].device:
                raise RuntimeError(
                    f"ftdfast: f_a[0] and {name} must be on the same device, got {f_a[0].device} and {t.device}")
        if a.shape != b.shape:
            raise RuntimeError(
                f"ftdfast: f_a[{k}] and f_b[{k}] must have the same shape, got {list(a.shape)} and {list(b.shape)}")


def _check_fisher_values(x: torch.Tensor, name: str) -> None:
    """x (float64, one Fisher diagonal) is non-negative, finite and not all zeros."""
    total = x.sum()
    if not torch.isfinite(total):
        raise RuntimeError(f"ftdfast: {name} has NaN or infinite entries (trace {total.item()})")
    if total.item() <= 0.0:
        raise RuntimeError(f"ftdfast: {name} is all zeros (trace 0); a Fisher diagonal must have a positive trace")


def fisher_distance_ref(f_a: Sequence[torch.Tensor], f_b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fisher Task Distance between two diagonal Fishers given as per-parameter tensors.

    Args:
        f_a, f_b: equally long lists of non-negative Fisher diagonals, ``f_a[k]``
            and ``f_b[k]`` of the same (any) shape; one floating dtype and one
            device for all.

    Returns:
        A 0-dim tensor (dtype of the inputs),
        ``d = || sqrt(f_a / tr f_a) - sqrt(f_b / tr f_b) ||_2 / sqrt(2)`` in [0, 1],
        where ``tr`` sums over every tensor of the list (the Hellinger
        distance between the normalised diagonals). Computed in float64 on
        the concatenated, flattened lists.
    """
    _check_fisher_distance(f_a, f_b)
    flat = []
    for fs, list_name in ((f_a, "f_a"), (f_b, "f_b")):
        for k, t in enumerate(fs):
            if t.numel() and t.min().item() < 0:
                raise RuntimeError(f"ftdfast: {list_name}[{k}] has a negative entry (min {t.min().item()}); "
                                   "a Fisher diagonal must be non-negative")
        x = torch.cat([t.reshape(-1).double() for t in fs])
        _check_fisher_values(x, list_name)
        flat.append(x)
    a, b = flat
    d2 = 0.5 * ((a / a.sum()).sqrt() - (b / b.sum()).sqrt()).square().sum()
    return d2.clamp_min(0.0).sqrt().clamp_max(1.0).to(f_a[0].dtype)


def _check_fisher_distance_matrix(rows: torch.Tensor, cols: torch.Tensor) -> None:
    """Same checks, and the same wording, as the native kernel (values are checked later)."""
    for x, name in ((rows, "rows (R, P)"), (cols, "cols (C, P)")):
        if x.dim() != 2:
            raise RuntimeError(f"ftdfast: {name} must be 2-D, got a {x.dim()}-D tensor of shape {list(x.shape)}")
    if rows.shape[1] != cols.shape[1]:
        raise RuntimeError(
            f"ftdfast: rows and cols must agree on dim 1 = P (parameters), got {rows.shape[1]} and {cols.shape[1]} "
            f"(shapes {list(rows.shape)} and {list(cols.shape)})")
    for x, name in ((rows, "rows"), (cols, "cols")):
        if not x.is_floating_point():
            raise RuntimeError(f"ftdfast: {name} must have a floating dtype, got {x.dtype}")
    if rows.dtype != cols.dtype:
        raise RuntimeError(f"ftdfast: rows and cols must have the same dtype, got {rows.dtype} and {cols.dtype}")
    if rows.device != cols.device:
        raise RuntimeError(f"ftdfast: rows and cols must be on the same device, got {rows.device} and {cols.device}")


def _sqrt_normalised_rows(m: torch.Tensor, name: str) -> torch.Tensor:
    """sqrt(m[r] / sum(m[r])) in float64, after the value checks of each row."""
    x = m.double()
    mins = x.amin(1).tolist() if x.shape[1] else [0.0] * x.shape[0]
    sums = x.sum(1)
    for r in range(x.shape[0]):
        if mins[r] < 0:
            raise RuntimeError(f"ftdfast: {name}[{r}] has a negative entry (min {mins[r]}); "
                               "a Fisher diagonal must be non-negative")
        if not torch.isfinite(sums[r]):
            raise RuntimeError(f"ftdfast: {name}[{r}] has NaN or infinite entries (sum {sums[r].item()})")
        if sums[r].item() <= 0.0:
            raise RuntimeError(f"ftdfast: {name}[{r}] is all zeros; a Fisher diagonal must have a positive trace")
    return (x / sums[:, None]).sqrt()


def fisher_distance_matrix_ref(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """All pairwise Fisher Task Distances between two sets of flattened Fisher diagonals.

    Args:
        rows: (R, P), each row a non-negative, flattened Fisher diagonal.
        cols: (C, P), same dtype and device as ``rows``.

    Returns:
        D of shape (R, C), dtype of the inputs, with
        ``D[r, c] = sqrt(max(0, 1 - <sqrt(p_r), sqrt(q_c)>))``, clamped to [0, 1],
        for ``p_r = rows[r] / sum(rows[r])`` and ``q_c = cols[c] / sum(cols[c])``:
        ``fisher_distance_ref([rows[r]], [cols[c]])`` for every pair by the
        Hellinger identity, computed as one float64 GEMM. Close pairs
        (``D^2 < 1e-2``), where ``1 - <., .>`` cancels digits, are recomputed
        from the definition ``0.5 ||sqrt(p_r) - sqrt(q_c)||^2``.
    """
    _check_fisher_distance_matrix(rows, cols)
    if rows.shape[0] == 0 or cols.shape[0] == 0:
        return rows.new_empty((rows.shape[0], cols.shape[0]))
    sr = _sqrt_normalised_rows(rows, "rows")
    sc = _sqrt_normalised_rows(cols, "cols")
    d2 = 1.0 - sr @ sc.T
    for r, c in (d2 < 1e-2).nonzero().tolist():
        d2[r, c] = 0.5 * (sr[r] - sc[c]).square().sum()
    return d2.clamp(0.0, 1.0).sqrt().to(rows.dtype)
