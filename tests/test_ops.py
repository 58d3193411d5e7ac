"""sq_grad_sum_linear: native kernel, pure-PyTorch reference and the ops wrapper.

Everything is checked against an independent float64 oracle: one explicit
per-sample gradient G_n = g_n.T @ a_n, squared and summed.
Index letters: n sample, t position, i in, o out.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ftdfast.native import _ext, ops
from ftdfast.native.reference import sq_grad_sum_linear_ref

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")
needs_gpu = pytest.mark.cuda

# (n, t, i, o) with readable ids, including the awkward cases.
SHAPES = {
    "n1_t1": (1, 1, 4, 3),
    "n0_empty": (0, 5, 4, 3),
    "n0_t1": (0, 1, 4, 3),
    "t0": (3, 0, 4, 3),
    "i0_o0": (3, 2, 0, 0),
    "t1_mlp": (16, 1, 20, 10),
    "odd_3_5_7": (3, 5, 7, 11),
    "t17": (4, 17, 9, 6),
    "n1_long": (1, 33, 12, 5),
    "o1_i1": (6, 4, 1, 1),
    "many_samples": (67, 3, 13, 7),
    # t <= 8 uses the fused CPU loop, t > 8 the BLAS one: both sides of the switch.
    "t8_fused": (5, 8, 33, 17),
    "t9_blas": (5, 9, 33, 17),
    # Bigger than one output tile (256 x 512) in both directions, odd remainders.
    "multi_tile": (3, 2, 515, 259),
    "multi_tile_blas": (2, 9, 515, 259),
}
# Explicit tolerances: float64 is near-exact; float32 is checked against the
# float64 oracle with rtol on the value and atol scaled by the largest entry.
TOL = {torch.float64: dict(rtol=1e-10, atol_scale=1e-12), torch.float32: dict(rtol=1e-4, atol_scale=1e-5)}


def oracle(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """sum_n (g_n.T @ a_n) ** 2 in float64, one explicit sample at a time."""
    n, _, i = a.shape
    out = torch.zeros(g.shape[2], i, dtype=torch.float64)
    for k in range(n):
        out += (g[k].double().T @ a[k].double()) ** 2
    return out


def make(shape, dtype, seed=0):
    n, t, i, o = shape
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, i, generator=gen, dtype=dtype), torch.randn(n, t, o, generator=gen, dtype=dtype)


def assert_matches(result: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    o, i = expected.shape
    assert result.shape == (o, i) and result.dtype == dtype
    tol = TOL[dtype]
    atol = tol["atol_scale"] * max(expected.abs().max().item(), 1.0) if expected.numel() else 0.0
    torch.testing.assert_close(result.double(), expected, rtol=tol["rtol"], atol=atol)


IMPLS = {
    "native": pytest.param(lambda a, g: torch.ops.ftdfast.sq_grad_sum_linear(a, g), marks=needs_native),
    "ref": sq_grad_sum_linear_ref,
    "ops": ops.sq_grad_sum_linear,
}


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_matches_oracle(impl, dtype, shape):
    a, g = make(shape, dtype)
    assert_matches(impl(a, g), oracle(a, g), dtype)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_native_matches_ref(dtype, shape):
    a, g = make(shape, dtype, seed=1)
    expected = sq_grad_sum_linear_ref(a.double(), g.double())
    assert_matches(torch.ops.ftdfast.sq_grad_sum_linear(a, g), expected, dtype)


@needs_native
@pytest.mark.parametrize("threads", [1, 3], ids=["1thread", "3threads"])
@pytest.mark.parametrize(
    "shape",
    [SHAPES["t17"], SHAPES["many_samples"], SHAPES["multi_tile"], SHAPES["multi_tile_blas"]],
    ids=["t17", "many", "tiles_fused", "tiles_blas"],
)
def test_native_thread_counts(threads, shape):
    """Single-threaded (one sample group) and more threads than tiles (several partials)."""
    a, g = make(shape, torch.float64)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = torch.ops.ftdfast.sq_grad_sum_linear(a, g)
    finally:
        torch.set_num_threads(old)
    assert_matches(result, oracle(a, g), torch.float64)


@needs_native
def test_native_non_contiguous_inputs():
    a, g = make((5, 4, 6, 3), torch.float64)
    a_nc = a.transpose(0, 1).contiguous().transpose(0, 1)  # same values, sample stride != t * i
    g_nc = torch.randn(5, 4, 6, dtype=torch.float64)[:, :, ::2]  # (5, 4, 3), strided last dim
    assert not a_nc.is_contiguous() and not g_nc.is_contiguous()
    assert_matches(torch.ops.ftdfast.sq_grad_sum_linear(a_nc, g_nc), oracle(a, g_nc), torch.float64)


@needs_native
@pytest.mark.parametrize("shape", [SHAPES["odd_3_5_7"], SHAPES["t1_mlp"], SHAPES["n0_empty"]], ids=["odd", "t1", "n0"])
def test_opcheck(shape):
    a, g = make(shape, torch.float64)
    torch.library.opcheck(torch.ops.ftdfast.sq_grad_sum_linear.default, (a, g))


@needs_native
def test_meta_shape():
    a = torch.empty(4, 3, 7, device="meta")
    g = torch.empty(4, 3, 5, device="meta")
    out = torch.ops.ftdfast.sq_grad_sum_linear(a, g)
    assert out.shape == (5, 7) and out.device.type == "meta"


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 6),
    t=st.integers(1, 9),
    i=st.integers(1, 9),
    o=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_ops_property(n, t, i, o, seed):
    a, g = make((n, t, i, o), torch.float64, seed=seed)
    assert_matches(ops.sq_grad_sum_linear(a, g), oracle(a, g), torch.float64)


# --- bad inputs: every implementation names the problem -----------------------------------

BAD = {
    "a_2d": ((torch.randn(4, 5), torch.randn(4, 1, 3)), r"a \(n, t, i\) must be 3-D"),
    "g_4d": ((torch.randn(4, 1, 5), torch.randn(4, 1, 3, 1)), r"g \(n, t, o\) must be 3-D"),
    "n_mismatch": ((torch.randn(4, 2, 5), torch.randn(3, 2, 3)), r"dim 0 = n \(samples\).*4 and 3"),
    "t_mismatch": ((torch.randn(4, 2, 5), torch.randn(4, 3, 3)), r"dim 1 = t \(positions\).*2 and 3"),
    "int_dtype": ((torch.ones(4, 2, 5, dtype=torch.int64), torch.ones(4, 2, 3, dtype=torch.int64)), r"a must have .*dtype"),
    "dtype_mismatch": ((torch.randn(4, 2, 5), torch.randn(4, 2, 3, dtype=torch.float64)), r"same dtype"),
}
BAD_IMPLS = {
    "native": pytest.param(lambda a, g: torch.ops.ftdfast.sq_grad_sum_linear(a, g), marks=needs_native),
    "ref": sq_grad_sum_linear_ref,
}


@pytest.mark.parametrize("impl", list(BAD_IMPLS.values()), ids=list(BAD_IMPLS))
@pytest.mark.parametrize("args, message", list(BAD.values()), ids=list(BAD))
def test_bad_inputs(impl, args, message):
    with pytest.raises(RuntimeError, match=message):
        impl(*args)


def test_ops_falls_back_without_native(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    a, g = make(SHAPES["t17"], torch.float64)
    assert_matches(ops.sq_grad_sum_linear(a, g), oracle(a, g), torch.float64)


def test_ops_other_float_dtype_uses_ref():
    a, g = make(SHAPES["odd_3_5_7"], torch.bfloat16)
    result = ops.sq_grad_sum_linear(a, g)
    assert result.dtype == torch.bfloat16
    torch.testing.assert_close(result.double(), oracle(a, g), rtol=5e-2, atol=1e-1)


# --- CUDA ------------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("shape", [SHAPES["t17"], SHAPES["t1_mlp"], SHAPES["n0_empty"]], ids=["t17", "t1", "n0"])
def test_ops_cuda(shape):
    a, g = make(shape, torch.float64)
    result = ops.sq_grad_sum_linear(a.cuda(), g.cuda())
    assert result.device.type == "cuda"
    assert_matches(result.cpu(), oracle(a, g), torch.float64)


@needs_native
@pytest.mark.skipif(not _ext.HAS_CUDA, reason="extension built without CUDA kernels")
@needs_gpu
def test_native_cuda_matches_oracle():
    a, g = make(SHAPES["t17"], torch.float32)
    assert_matches(torch.ops.ftdfast.sq_grad_sum_linear(a.cuda(), g.cuda()).cpu(), oracle(a, g), torch.float32)


# --- autograd ---------------------------------------------------------------------------------


@needs_native
def test_native_accepts_inputs_that_require_grad():
    """The native op has no autograd formula, but must still compute (worker threads included)."""
    a, g = make(SHAPES["many_samples"], torch.float64)
    result = torch.ops.ftdfast.sq_grad_sum_linear(a.requires_grad_(), g)
    assert_matches(result.detach(), oracle(a.detach(), g), torch.float64)


def test_ops_is_differentiable():
    a, g = make(SHAPES["odd_3_5_7"], torch.float64)
    a.requires_grad_()
    g.requires_grad_()
    assert torch.autograd.gradcheck(ops.sq_grad_sum_linear, (a, g))
