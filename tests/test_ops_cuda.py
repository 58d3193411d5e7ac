"""The CUDA kernels of the four native ops: what the spec-driven tests (tests/native/test_specs.py:
every op on every sample against its reference, and opcheck) do not cover: random shapes,
non-contiguous inputs, determinism, bad values, mixed devices, the ops wrappers.

Every test needs a GPU and the extension built with CUDA kernels
(``ftdfast.native._ext.HAS_CUDA``); without them the module is collected and skipped.
Each CUDA result is compared with the matching ``ftdfast.native.reference`` function
on float64 CPU copies of the same inputs: float64 near-exactly, float32 with
rtol 1e-4 (the sq_grad_sum ops, float32 arithmetic) or 1e-6 (the distances,
accumulated in float64).
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from ftdfast.native import _ext, ops
from ftdfast.native.reference import (
    SPECS,
    fisher_distance_matrix_ref,
    fisher_distance_ref,
    sq_grad_sum_conv_ref,
    sq_grad_sum_linear_ref,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _ext.HAS_CUDA, reason=f"extension without CUDA kernels (load error: {_ext.LOAD_ERROR})"),
]

DTYPES = dict(argnames="dtype", argvalues=[torch.float64, torch.float32], ids=["f64", "f32"])
# sq_grad_sum: rtol on the value, atol scaled by the largest entry of the float64 reference.
TOL = {torch.float64: dict(rtol=1e-10, atol_scale=1e-12), torch.float32: dict(rtol=1e-4, atol_scale=1e-5)}
# fisher_distance: on d in [0, 1].
DIST_TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}
# fisher_distance_matrix: the identity 1 - <sqrt p, sqrt q> cancels near d = 0.
MATRIX_TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def assert_close_scaled(result: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """result (CUDA, dtype) against a float64 CPU reference."""
    assert result.device.type == "cuda" and result.dtype == dtype
    assert result.shape == expected.shape
    tol = TOL[dtype]
    atol = tol["atol_scale"] * max(expected.abs().max().item(), 1.0) if expected.numel() else 0.0
    torch.testing.assert_close(result.cpu().double(), expected, rtol=tol["rtol"], atol=atol)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sample(op: str, pid: str, dtype: torch.dtype) -> list:
    """The awkward sample ``pid`` of ``op``'s spec (ftdfast.native.reference.SPECS), on the GPU in ``dtype``."""
    return dict(SPECS[f"ftdfast::{op}"].sample_inputs(_gen(0), "cuda", dtype, awkward=True))[pid]


# ------------------------------------------------------------------ sq_grad_sum_linear

def make_linear(shape, dtype, seed=0):
    n, t, i, o = shape
    g = _gen(seed)
    a = torch.randn(n, t, i, generator=g, dtype=torch.float64)
    gy = torch.randn(n, t, o, generator=g, dtype=torch.float64)
    return a.to(dtype).cuda(), gy.to(dtype).cuda()


def linear_expected(a, g):
    return sq_grad_sum_linear_ref(a.cpu().double(), g.cpu().double())


def _random_linear_shapes(count=20, seed=7):
    rng = random.Random(seed)
    return [(rng.randint(1, 40), rng.choice([1, 2, 3, 7, 15, 16, 17, 40]), rng.randint(1, 150), rng.randint(1, 150))
            for _ in range(count)]


@pytest.mark.parametrize(**DTYPES)
@pytest.mark.parametrize("shape", _random_linear_shapes(), ids=lambda s: "x".join(map(str, s)))
def test_linear_random_shapes(dtype, shape):
    a, g = make_linear(shape, dtype, seed=sum(shape))
    assert_close_scaled(torch.ops.ftdfast.sq_grad_sum_linear(a, g), linear_expected(a, g), dtype)


def test_linear_non_contiguous_inputs():
    a, g = make_linear((5, 4, 6, 3), torch.float64)
    a_nc = a.transpose(0, 1).contiguous().transpose(0, 1)
    g_nc = torch.randn(5, 4, 6, dtype=torch.float64, device="cuda")[:, :, ::2]
    assert not a_nc.is_contiguous() and not g_nc.is_contiguous()
    assert_close_scaled(torch.ops.ftdfast.sq_grad_sum_linear(a_nc, g_nc), linear_expected(a, g_nc), torch.float64)


def test_linear_requires_grad_inputs():
    a, g = make_linear((7, 3, 13, 7), torch.float64)
    result = torch.ops.ftdfast.sq_grad_sum_linear(a.clone().requires_grad_(), g)
    assert_close_scaled(result.detach(), linear_expected(a, g), torch.float64)


def test_linear_deterministic():
    a, g = sample("sq_grad_sum_linear", "tiny_oi_many_samples", torch.float32)
    first = torch.ops.ftdfast.sq_grad_sum_linear(a, g)
    assert torch.equal(first, torch.ops.ftdfast.sq_grad_sum_linear(a, g))


def test_linear_mixed_devices_raise():
    a, g = make_linear((2, 3, 4, 5), torch.float64)
    with pytest.raises(RuntimeError, match=r"a and g must be on the same device"):
        torch.ops.ftdfast.sq_grad_sum_linear(a, g.cpu())


def test_linear_ops_wrapper_uses_the_cuda_kernel(monkeypatch):
    def no_ref(*args, **kwargs):
        raise AssertionError("the reference was used for CUDA inputs")

    monkeypatch.setattr(ops, "sq_grad_sum_linear_ref", no_ref)
    a, g = make_linear((3, 5, 7, 11), torch.float32)
    assert_close_scaled(ops.sq_grad_sum_linear(a, g), linear_expected(a, g), torch.float32)


# -------------------------------------------------------------------- sq_grad_sum_conv

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def make_conv(case, dtype, seed=0):
    n, ci, co, spatial, kernel, stride, padding, dilation, groups = case
    g = _gen(seed)
    x = torch.randn((n, ci) + tuple(spatial), generator=g, dtype=torch.float64)
    weight_shape = [co, ci // groups] + list(kernel)
    w = torch.randn(weight_shape, generator=g, dtype=torch.float64)
    y = CONV[len(spatial)](x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    args = (weight_shape, list(stride), list(padding), list(dilation), groups)
    return x.to(dtype).cuda(), gy.to(dtype).cuda(), args


def conv_expected(x, gy, args):
    return sq_grad_sum_conv_ref(x.cpu().double(), gy.cpu().double(), *args)


def _random_conv_cases(count=24, seed=11):
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        d = rng.randint(1, 3)
        groups = rng.choice([1, 1, 2, 3])
        ci, co = groups * rng.randint(1, 4), groups * rng.randint(1, 5)
        kernel = [rng.randint(1, 3) for _ in range(d)]
        stride = [rng.randint(1, 3) for _ in range(d)]
        padding = [rng.randint(0, 2) for _ in range(d)]
        dilation = [rng.randint(1, 2) for _ in range(d)]
        spatial = []
        for k, p, dil in zip(kernel, padding, dilation):
            span = dil * (k - 1) + 1
            spatial.append(rng.randint(max(1, span - 2 * p), span + (8 if d < 3 else 4)))
        cases.append((rng.randint(1, 6), ci, co, tuple(spatial), tuple(kernel), tuple(stride), tuple(padding),
                      tuple(dilation), groups))
    return cases


@pytest.mark.parametrize(**DTYPES)
@pytest.mark.parametrize("case", _random_conv_cases(), ids=lambda c: f"{len(c[3])}d_" + "_".join(
    "x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in c))
def test_conv_random_cases(dtype, case):
    x, gy, args = make_conv(case, dtype, seed=3)
    assert_close_scaled(torch.ops.ftdfast.sq_grad_sum_conv(x, gy, *args), conv_expected(x, gy, args), dtype)


def test_conv_non_contiguous_inputs():
    x, gy, *args = sample("sq_grad_sum_conv", "2d_odd", torch.float64)
    x_nc = x.contiguous(memory_format=torch.channels_last)
    gy_nc = gy.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_nc.is_contiguous() and not gy_nc.is_contiguous()
    assert_close_scaled(torch.ops.ftdfast.sq_grad_sum_conv(x_nc, gy_nc, *args), conv_expected(x, gy, args),
                        torch.float64)


def test_conv_deterministic():
    x, gy, *args = sample("sq_grad_sum_conv", "2d_tiny_weight_many_samples", torch.float32)
    first = torch.ops.ftdfast.sq_grad_sum_conv(x, gy, *args)
    assert torch.equal(first, torch.ops.ftdfast.sq_grad_sum_conv(x, gy, *args))


def test_conv_ops_wrapper_uses_the_cuda_kernel(monkeypatch):
    def no_ref(*args, **kwargs):
        raise AssertionError("the reference was used for CUDA inputs")

    monkeypatch.setattr(ops, "sq_grad_sum_conv_ref", no_ref)
    x, gy, *args = sample("sq_grad_sum_conv", "2d_groups2", torch.float32)
    assert_close_scaled(ops.sq_grad_sum_conv(x, gy, *args), conv_expected(x, gy, args), torch.float32)


# --------------------------------------------------------------------- fisher_distance

def make_fishers(shapes, dtype, seed=0):
    g = _gen(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).square().to(dtype).cuda() for s in shapes]


def distance_expected(f_a, f_b) -> torch.Tensor:
    return fisher_distance_ref([t.cpu().double() for t in f_a], [t.cpu().double() for t in f_b])


def assert_distance(result, expected, dtype, tol=None):
    assert result.device.type == "cuda" and result.shape == () and result.dtype == dtype
    torch.testing.assert_close(result.cpu().double(), expected.double(), **(tol or DIST_TOL[dtype]))


@pytest.mark.parametrize(**DTYPES)
def test_distance_identical_and_disjoint(dtype):
    f, _ = sample("fisher_distance", "mixed_shapes", dtype)
    assert torch.ops.ftdfast.fisher_distance(f, [t.clone() for t in f]).item() == 0.0
    f_a = [torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=dtype, device="cuda"), torch.zeros(3, dtype=dtype, device="cuda")]
    f_b = [torch.tensor([0.0, 0.0, 3.0, 0.5], dtype=dtype, device="cuda"),
           torch.tensor([0.0, 4.0, 0.0], dtype=dtype, device="cuda")]
    assert_distance(torch.ops.ftdfast.fisher_distance(f_a, f_b), torch.tensor(1.0, dtype=torch.float64), dtype)


def test_distance_float32_close_to_float64():
    f_a, f_b = sample("fisher_distance", "multi_chunk", torch.float32)
    d32 = torch.ops.ftdfast.fisher_distance(f_a, f_b)
    d64 = torch.ops.ftdfast.fisher_distance([t.double() for t in f_a], [t.double() for t in f_b])
    torch.testing.assert_close(d32.double(), d64, rtol=1e-6, atol=1e-7)


def test_distance_deterministic():
    f_a, f_b = sample("fisher_distance", "multi_chunk", torch.float64)
    first = torch.ops.ftdfast.fisher_distance(f_a, f_b)
    for _ in range(3):
        assert torch.equal(first, torch.ops.ftdfast.fisher_distance(f_a, f_b))


def test_distance_non_contiguous_inputs():
    base_a = make_fishers([(6, 10)], torch.float64, 8)[0]
    base_b = make_fishers([(10, 6)], torch.float64, 9)[0]
    f_a = [base_a.T, base_a[:, ::3], base_a[::2, 1]]
    f_b = [base_b, base_b.T[:, ::3], base_b.T[::2, 2]]
    assert not f_a[0].is_contiguous() and not f_a[1].is_contiguous() and not f_b[1].is_contiguous()
    assert_distance(torch.ops.ftdfast.fisher_distance(f_a, f_b), distance_expected(f_a, f_b), torch.float64)


def _c(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype, device="cuda")


DIST_BAD = {
    "negative_a": (lambda: ([_c(1.0), _c(2.0, -0.5)], [_c(1.0), _c(1.0, 1.0)]), r"f_a\[1\] has a negative entry \(min -0.5"),
    "negative_b": (lambda: ([_c(1.0)], [_c(-1.0)]), r"f_b\[0\] has a negative entry"),
    "negative_after_nan": (lambda: ([_c(float("nan"), 1.0), _c(-2.0)], [_c(1.0, 1.0), _c(1.0)]),
                           r"f_a\[1\] has a negative entry \(min -2"),
    "zeros_a": (lambda: ([torch.zeros(3, device="cuda"), torch.zeros((), device="cuda")],
                         [torch.ones(3, device="cuda"), torch.ones((), device="cuda")]), r"f_a is all zeros"),
    "zeros_b": (lambda: ([torch.ones(3, device="cuda")], [torch.zeros(3, device="cuda")]), r"f_b is all zeros"),
    "all_empty": (lambda: ([torch.ones(0, device="cuda")], [torch.ones(0, device="cuda")]), r"f_a is all zeros"),
    "nan": (lambda: ([_c(1.0, float("nan"))], [_c(1.0, 1.0)]), r"f_a has NaN or infinite entries"),
    "shape_mismatch": (lambda: ([torch.ones(2, 3, device="cuda")], [torch.ones(3, 2, device="cuda")]),
                       r"f_a\[0\] and f_b\[0\] must have the same shape"),
}


@pytest.mark.parametrize("make_args, message", list(DIST_BAD.values()), ids=list(DIST_BAD))
def test_distance_bad_values(make_args, message):
    f_a, f_b = make_args()
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ftdfast.fisher_distance(f_a, f_b)
    with pytest.raises(RuntimeError, match=message):  # the reference says the same
        fisher_distance_ref(f_a, f_b)


def test_distance_ops_wrapper_uses_the_cuda_kernel(monkeypatch):
    def no_ref(*args, **kwargs):
        raise AssertionError("the reference was used for CUDA inputs")

    monkeypatch.setattr(ops, "fisher_distance_ref", no_ref)
    f_a, f_b = sample("fisher_distance", "mixed_shapes", torch.float32)
    assert_distance(ops.fisher_distance(f_a, f_b), distance_expected(f_a, f_b), torch.float32)


# -------------------------------------------------------------- fisher_distance_matrix

def make_matrix(shape, dtype, seed=10):
    r, c, p = shape
    g = _gen(seed)
    rows = torch.randn(r, p, generator=g, dtype=torch.float64).square()
    cols = torch.randn(c, p, generator=g, dtype=torch.float64).square()
    return rows.to(dtype).cuda(), cols.to(dtype).cuda()


def test_matrix_same_tensor_both_sides():
    rows, _ = make_matrix((5, 1, 40), torch.float64)
    result = torch.ops.ftdfast.fisher_distance_matrix(rows, rows)
    torch.testing.assert_close(result, result.T, rtol=0, atol=1e-15)
    assert result.diagonal().abs().max().item() <= 1e-7


def test_matrix_non_contiguous_inputs():
    rows = make_matrix((30, 1, 3), torch.float64)[0].T
    cols = make_matrix((4, 1, 60), torch.float64)[0][:, ::2]
    assert not rows.is_contiguous() and not cols.is_contiguous()
    expected = fisher_distance_matrix_ref(rows.cpu(), cols.cpu())
    torch.testing.assert_close(torch.ops.ftdfast.fisher_distance_matrix(rows, cols).cpu(), expected,
                               **MATRIX_TOL[torch.float64])


MATRIX_BAD = {
    "negative_row": (lambda: (_c(1.0, 2.0, -1.0).reshape(1, 3), _c(1.0, 1.0, 1.0).reshape(1, 3)),
                     r"rows\[0\] has a negative entry \(min -1"),
    "zero_col": (lambda: (_c(1.0, 2.0, 3.0).reshape(1, 3), torch.zeros(2, 3, device="cuda")), r"cols\[0\] is all zeros"),
    "nan_row": (lambda: (_c(1.0, float("nan")).reshape(1, 2), _c(1.0, 1.0).reshape(1, 2)),
                r"rows\[0\] has NaN or infinite entries"),
    "nan_and_negative": (lambda: (_c(float("nan"), -3.0).reshape(1, 2), _c(1.0, 1.0).reshape(1, 2)),
                         r"rows\[0\] has a negative entry \(min -3"),
}


@pytest.mark.parametrize("make_args, message", list(MATRIX_BAD.values()), ids=list(MATRIX_BAD))
def test_matrix_bad_values(make_args, message):
    rows, cols = make_args()
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ftdfast.fisher_distance_matrix(rows, cols)
