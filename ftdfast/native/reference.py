"""Pure-PyTorch reference implementations of the native ops, and each op's spec.

They are the fallback when ``ftdfast._C`` is missing (or has no kernel for a
device) and the oracle the native kernels are tested against. Each op's
:class:`~ftdfast.native.spec.OpSpec` (its reference, input check, fake kernel,
sample problems and tolerances) follows its reference; :data:`SPECS` lists them.

Index letters: n sample, t position, i in (features), o out (features).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..workspace import chunk_size, workspace_elements
from .spec import OpSpec, Problems

# The dtypes the native kernels take (the fake kernels say so, as the kernels do).
KERNEL_DTYPES = (torch.float32, torch.float64)


def _check_pair(x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str) -> None:
    """Two inputs of one op: both floating, one dtype, one device (the kernels' checks and wording)."""
    for t, name in ((x, x_name), (y, y_name)):
        if not t.is_floating_point():
            raise RuntimeError(f"ftdfast: {name} must have a floating dtype, got {t.dtype}")
    if x.dtype != y.dtype:
        raise RuntimeError(f"ftdfast: {x_name} and {y_name} must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise RuntimeError(f"ftdfast: {x_name} and {y_name} must be on the same device, got {x.device} and {y.device}")


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
    _check_pair(a, g, "a", "g")


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
    _check_pair(x, gy, "input", "grad_output")


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
    _check_pair(rows, cols, "rows", "cols")


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


# ----------------------------------------------------------------------------- the specs
# Sample problems are float64 CPU tensors drawn from the generator given, with readable ids;
# the tests and the self-check round them to the dtype and move them to the device under test.

def _dtype_check(x: torch.Tensor, name: str) -> None:
    torch._check(x.dtype in KERNEL_DTYPES, lambda: f"ftdfast: {name} must have dtype float32 or float64, got {x.dtype}")


def _sq_grad_sum_linear_fake(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    torch._check(a.dim() == 3, lambda: f"ftdfast: a (n, t, i) must be 3-D, got {a.dim()}-D")
    torch._check(g.dim() == 3, lambda: f"ftdfast: g (n, t, o) must be 3-D, got {g.dim()}-D")
    torch._check(a.shape[0] == g.shape[0], lambda: "ftdfast: a and g must agree on dim 0 = n (samples)")
    torch._check(a.shape[1] == g.shape[1], lambda: "ftdfast: a and g must agree on dim 1 = t (positions)")
    torch._check(a.dtype == g.dtype, lambda: "ftdfast: a and g must have the same dtype")
    return a.new_empty((g.shape[2], a.shape[2]))


def _linear(gen: torch.Generator, shapes: dict) -> Problems:
    """(a (n, t, i), g (n, t, o)) for each id -> (n, t, i, o)."""
    return {pid: (torch.randn(n, t, i, generator=gen, dtype=torch.float64),
                  torch.randn(n, t, o, generator=gen, dtype=torch.float64))
            for pid, (n, t, i, o) in shapes.items()}


SQ_GRAD_SUM_LINEAR = OpSpec(
    name="sq_grad_sum_linear", reference=sq_grad_sum_linear_ref, check=_check_sq_grad_sum_linear,
    fake=_sq_grad_sum_linear_fake,
    # The CPU kernel's fused loop (t <= 8), its one GEMM (t = 1) and its BLAS path (t > 8).
    samples=lambda gen: _linear(gen, {"fused_5_3_7_6": (5, 3, 7, 6), "t1_gemm": (4, 1, 9, 5),
                                      "t11_blas": (3, 11, 5, 4)}),
    awkward_samples=lambda gen: _linear(gen, {
        "odd_3_5_7_11": (3, 5, 7, 11), "t1": (16, 1, 20, 10), "t1_n1": (1, 1, 4, 3), "n1": (1, 33, 12, 5),
        "n0": (0, 5, 4, 3), "t0": (3, 0, 4, 3), "i0_o0": (3, 2, 0, 0), "o1_i1": (6, 4, 1, 1),
        "t16_exact_chunk": (4, 16, 33, 20), "t17_chunk_remainder": (4, 17, 9, 6),
        # Few output tiles: samples split over blocks (CUDA) or threads (CPU), partials summed.
        "tiny_oi_many_samples": (300, 3, 5, 4), "tiny_oi_long_t": (40, 100, 3, 2),
        # Many tiles, several in each direction with remainders.
        "large_oi": (3, 9, 515, 259), "transformer_like": (4, 64, 256, 192)}),
    tolerance={torch.float64: 1e-10, torch.float32: 1e-4}, relative=True)


def _sq_grad_sum_conv_fake(input, grad_output, weight_shape, stride, padding, dilation, groups):
    _check_sq_grad_sum_conv(input, grad_output, weight_shape, stride, padding, dilation, groups)
    _dtype_check(input, "input")
    return input.new_empty(list(weight_shape))


def _conv(gen: torch.Generator, cases: dict) -> Problems:
    """(input, grad_output, weight_shape, stride, padding, dilation, groups) for each id ->
    (n, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)."""
    out = {}
    for pid, (n, ci, co, spatial, kernel, stride, padding, dilation, groups) in cases.items():
        x = torch.randn((n, ci) + tuple(spatial), generator=gen, dtype=torch.float64)
        spatial_out = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                            for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation))
        gy = torch.randn((n, co) + spatial_out, generator=gen, dtype=torch.float64)
        out[pid] = (x, gy, [co, ci // groups, *kernel], list(stride), list(padding), list(dilation), groups)
    return out


SQ_GRAD_SUM_CONV = OpSpec(
    name="sq_grad_sum_conv", reference=sq_grad_sum_conv_ref, check=_check_sq_grad_sum_conv,
    fake=_sq_grad_sum_conv_fake,
    samples=lambda gen: _conv(gen, {
        "2d_stride_pad_dil_g2": (3, 4, 6, (7, 6), (3, 2), (2, 1), (1, 0), (1, 2), 2),
        "1d_pad_dil": (2, 3, 5, (9,), (3,), (1,), (1,), (2,), 1)}),
    awkward_samples=lambda gen: _conv(gen, {
        "1d_basic": (3, 4, 6, (9,), (3,), (1,), (0,), (1,), 1),
        "1d_stride_pad_dil_g2": (3, 4, 6, (11,), (3,), (2,), (1,), (2,), 2),
        "2d_n1": (1, 3, 5, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        "2d_n0": (0, 3, 5, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        "2d_odd": (4, 3, 7, (9, 5), (3, 2), (2, 1), (1, 0), (1, 2), 1),
        "2d_stride3_pad2": (3, 2, 3, (10, 8), (2, 3), (3, 2), (2, 2), (1, 1), 1),
        "2d_groups2": (3, 4, 6, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 2),
        "2d_depthwise": (4, 6, 6, (7, 8), (3, 3), (2, 1), (1, 2), (1, 2), 6),
        "2d_depthwise_mult2": (2, 3, 6, (6, 6), (3, 3), (1, 1), (1, 1), (1, 1), 3),
        "2d_1x1_stride2": (4, 8, 16, (8, 8), (1, 1), (2, 2), (0, 0), (1, 1), 1),
        "2d_kernel_eq_input": (3, 2, 4, (5, 5), (5, 5), (1, 1), (0, 0), (1, 1), 1),
        "2d_lenet1": (64, 1, 6, (28, 28), (5, 5), (1, 1), (2, 2), (1, 1), 1),
        "2d_many_channels": (2, 130, 300, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        "2d_resnet_layer1_like": (8, 64, 64, (16, 16), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        "2d_long_positions": (2, 3, 4, (130, 140), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        "2d_tiny_weight_many_samples": (200, 1, 2, (6, 6), (2, 2), (1, 1), (0, 0), (1, 1), 1),
        "3d_basic_g2": (3, 4, 8, (5, 6, 7), (2, 3, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1), 2),
        "3d_stride_dil": (2, 3, 4, (7, 8, 9), (3, 2, 3), (2, 1, 2), (0, 1, 1), (1, 2, 1), 1)}),
    tolerance={torch.float64: 1e-10, torch.float32: 1e-4}, relative=True)


def _fisher_distance_fake(f_a, f_b):
    _check_fisher_distance(f_a, f_b)
    _dtype_check(f_a[0], "f_a[0]")
    return f_a[0].new_empty(())


def _fishers(gen: torch.Generator, lists: dict) -> Problems:
    """(f_a, f_b), non-negative (squared normals: entries span orders of magnitude) for each id -> shapes."""
    return {pid: ([torch.randn(s, generator=gen, dtype=torch.float64).square() for s in shapes],
                  [torch.randn(s, generator=gen, dtype=torch.float64).square() for s in shapes])
            for pid, shapes in lists.items()}


def _fisher_distance_samples(gen: torch.Generator) -> Problems:
    shapes = ((3, 5), (7,), (), (0,), (2, 1, 3))
    return {"mixed_shapes": ([torch.rand(s, generator=gen, dtype=torch.float64) for s in shapes],
                             [torch.rand(s, generator=gen, dtype=torch.float64) for s in shapes])}


FISHER_DISTANCE = OpSpec(
    name="fisher_distance", reference=fisher_distance_ref, check=_check_fisher_distance,
    fake=_fisher_distance_fake, samples=_fisher_distance_samples,
    awkward_samples=lambda gen: _fishers(gen, {
        "one_tensor": [(37,)], "mixed_shapes": [(3, 5), (7,), (2, 3, 4), (1, 1, 1, 5), (11, 13)],
        "scalar_param": [(), (4,), ()], "with_empty": [(0,), (6, 2), (0, 3)],
        # Several chunks (8192 entries on CUDA) in one tensor, odd remainders.
        "multi_chunk": [(3, 70001), (5,), (131073,), ()],
        "resnet_like": [(64, 3, 3, 3), (64,), (64,), (128, 64, 3, 3), (128,), (512, 256, 3, 3), (10, 512), (10,)]}),
    tolerance={torch.float64: 1e-12, torch.float32: 1e-6}, relative=False)


def _fisher_distance_matrix_fake(rows, cols):
    _check_fisher_distance_matrix(rows, cols)
    _dtype_check(rows, "rows")
    return rows.new_empty((rows.shape[0], cols.shape[0]))


def _matrices(gen: torch.Generator, shapes: dict) -> Problems:
    """(rows (R, P), cols (C, P)), squared normals, for each id -> (R, C, P)."""
    return {pid: (torch.randn(r, p, generator=gen, dtype=torch.float64).square(),
                  torch.randn(c, p, generator=gen, dtype=torch.float64).square())
            for pid, (r, c, p) in shapes.items()}


FISHER_DISTANCE_MATRIX = OpSpec(
    name="fisher_distance_matrix", reference=fisher_distance_matrix_ref, check=_check_fisher_distance_matrix,
    fake=_fisher_distance_matrix_fake,
    samples=lambda gen: {"3x2_p37": (torch.rand(3, 37, generator=gen, dtype=torch.float64),
                                     torch.rand(2, 37, generator=gen, dtype=torch.float64))},
    awkward_samples=lambda gen: _matrices(gen, {
        "1x1": (1, 1, 9), "3x5": (3, 5, 17), "p1": (2, 3, 1), "r0": (0, 4, 8), "c0": (3, 0, 8),
        "wide": (4, 2, 70001), "many_rows": (70, 33, 300)}),
    # The identity 1 - <sqrt p, sqrt q> cancels digits near d = 0.
    tolerance={torch.float64: 1e-9, torch.float32: 1e-5}, relative=False)

# Every native op's spec, by its qualified name ("ftdfast::<name>"): a new op adds one line.
SPECS = {spec.qualname: spec for spec in (SQ_GRAD_SUM_LINEAR, SQ_GRAD_SUM_CONV, FISHER_DISTANCE,
                                          FISHER_DISTANCE_MATRIX)}
