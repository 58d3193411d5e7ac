"""sq_grad_sum_conv: native kernel, pure-PyTorch reference and the ops wrapper.

Everything is checked against an independent float64 oracle: one weight-only
convolution_backward per sample, squared and summed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ftdfast.native import _ext, ops
from ftdfast.native.reference import sq_grad_sum_conv_ref

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")

# (n, C_in, C_out, spatial, kernel, stride, padding, dilation, groups) with readable ids.
CASES = {
    "1d_basic": (3, 4, 6, (9,), (3,), (1,), (0,), (1,), 1),
    "1d_stride_pad_dil_g2": (3, 4, 6, (11,), (3,), (2,), (1,), (2,), 2),
    "2d_n1": (1, 3, 5, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "2d_n0": (0, 3, 5, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "2d_lenet1_small": (5, 1, 6, (28, 28), (5, 5), (1, 1), (2, 2), (1, 1), 1),
    "2d_odd": (4, 3, 7, (9, 5), (3, 2), (2, 1), (1, 0), (1, 2), 1),
    "2d_stride3_pad_gt_kernel_half": (3, 2, 3, (10, 8), (2, 3), (3, 2), (2, 2), (1, 1), 1),
    "2d_groups2": (3, 4, 6, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 2),
    "2d_depthwise": (4, 6, 6, (7, 8), (3, 3), (2, 1), (1, 2), (1, 2), 6),
    "2d_depthwise_mult2": (2, 3, 6, (6, 6), (3, 3), (1, 1), (1, 1), (1, 1), 3),
    "2d_1x1_stride2": (4, 8, 16, (8, 8), (1, 1), (2, 2), (0, 0), (1, 1), 1),
    "2d_kernel_eq_input": (3, 2, 4, (5, 5), (5, 5), (1, 1), (0, 0), (1, 1), 1),
    "2d_many_channels": (2, 130, 300, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "2d_multi_tile_rows_cols": (2, 70, 520, (4, 4), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "2d_long_positions": (2, 3, 4, (130, 140), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "2d_wide_patch_chunks": (2, 64, 8, (70, 70), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "3d_basic": (3, 4, 8, (5, 6, 7), (2, 3, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1), 2),
    "3d_stride_dil": (2, 3, 4, (7, 8, 9), (3, 2, 3), (2, 1, 2), (0, 1, 1), (1, 2, 1), 1),
    "many_samples": (37, 2, 3, (6, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # Stride 1: the CPU op's "wide" grid (padded-input slices), with dilation, uneven padding and groups.
    "1d_wide_pad_dil": (3, 2, 5, (17,), (3,), (1,), (3,), (2,), 1),
    "2d_wide_dil_pad_groups": (3, 4, 6, (9, 11), (3, 2), (1, 1), (2, 1), (2, 3), 2),
    "2d_wide_lenet2": (4, 6, 16, (14, 14), (5, 5), (1, 1), (0, 0), (1, 1), 1),
    "3d_wide_dil": (2, 3, 4, (4, 7, 6), (2, 3, 2), (1, 1, 1), (0, 2, 1), (1, 2, 1), 1),
}
TOL = {torch.float64: dict(rtol=1e-10, atol_scale=1e-12), torch.float32: dict(rtol=1e-4, atol_scale=1e-5)}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def make(case, dtype, seed=0):
    n, ci, co, spatial, kernel, stride, padding, dilation, groups = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, ci) + spatial, generator=gen, dtype=torch.float64)
    weight_shape = [co, ci // groups] + list(kernel)
    w = torch.randn(weight_shape, generator=gen, dtype=torch.float64)
    y = CONV[len(spatial)](x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    args = (weight_shape, list(stride), list(padding), list(dilation), groups)
    return x.to(dtype), gy.to(dtype), args


def oracle(x, gy, weight_shape, stride, padding, dilation, groups):
    """sum_n G_n ** 2 in float64, one convolution_backward per sample."""
    w = torch.empty(weight_shape, dtype=torch.float64)
    out = torch.zeros(weight_shape, dtype=torch.float64)
    for k in range(x.shape[0]):
        g = torch.ops.aten.convolution_backward(
            gy[k:k + 1].double(), x[k:k + 1].double(), w, None, stride, padding, dilation, False,
            [0] * len(stride), groups, [False, True, False])[1]
        out += g * g
    return out


def assert_matches(result, expected, dtype):
    assert result.shape == expected.shape and result.dtype == dtype
    tol = TOL[dtype]
    atol = tol["atol_scale"] * max(expected.abs().max().item(), 1.0) if expected.numel() else 0.0
    torch.testing.assert_close(result.double(), expected, rtol=tol["rtol"], atol=atol)


IMPLS = {
    "native": pytest.param(lambda x, gy, *a: torch.ops.ftdfast.sq_grad_sum_conv(x, gy, *a), marks=needs_native),
    "ref": sq_grad_sum_conv_ref,
    "ref_chunk1": lambda x, gy, *a: sq_grad_sum_conv_ref(x, gy, *a, max_chunk_elems=1),
    "ops": ops.sq_grad_sum_conv,
}


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_matches_oracle(impl, dtype, case):
    x, gy, args = make(case, dtype)
    assert_matches(impl(x, gy, *args), oracle(x, gy, *args), dtype)


@needs_native
@pytest.mark.parametrize("threads", [1, 3], ids=["1thread", "3threads"])
@pytest.mark.parametrize("name", ["2d_odd", "many_samples", "2d_multi_tile_rows_cols", "2d_depthwise"])
def test_native_thread_counts(threads, name):
    x, gy, args = make(CASES[name], torch.float64)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = torch.ops.ftdfast.sq_grad_sum_conv(x, gy, *args)
    finally:
        torch.set_num_threads(old)
    assert_matches(result, oracle(x, gy, *args), torch.float64)


@needs_native
def test_native_non_contiguous_inputs():
    x, gy, args = make(CASES["2d_odd"], torch.float64)
    x_nc = x.contiguous(memory_format=torch.channels_last)
    gy_nc = gy.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_nc.is_contiguous() and not gy_nc.is_contiguous()
    assert_matches(torch.ops.ftdfast.sq_grad_sum_conv(x_nc, gy_nc, *args), oracle(x, gy, *args), torch.float64)


@needs_native
def test_native_requires_grad_inputs():
    x, gy, args = make(CASES["many_samples"], torch.float64)
    result = torch.ops.ftdfast.sq_grad_sum_conv(x.clone().requires_grad_(), gy, *args)
    assert_matches(result.detach(), oracle(x, gy, *args), torch.float64)


@needs_native
@pytest.mark.parametrize("name", ["1d_stride_pad_dil_g2", "2d_odd", "2d_n0", "3d_basic"])
def test_opcheck(name):
    x, gy, args = make(CASES[name], torch.float64)
    torch.library.opcheck(torch.ops.ftdfast.sq_grad_sum_conv.default, (x, gy, *args))


@needs_native
def test_meta_shape():
    x = torch.empty(4, 6, 9, 9, device="meta")
    gy = torch.empty(4, 8, 5, 5, device="meta")
    out = torch.ops.ftdfast.sq_grad_sum_conv(x, gy, [8, 3, 3, 3], [2, 2], [1, 1], [1, 1], 2)
    assert out.shape == (8, 3, 3, 3) and out.device.type == "meta"


def test_ops_falls_back_without_native(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    x, gy, args = make(CASES["2d_groups2"], torch.float64)
    assert_matches(ops.sq_grad_sum_conv(x, gy, *args), oracle(x, gy, *args), torch.float64)


def test_ops_is_differentiable():
    x, gy, args = make((2, 2, 2, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1), torch.float64)
    x.requires_grad_()
    gy.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ops.sq_grad_sum_conv(a, b, *args), (x, gy))


# --- bad inputs: every implementation names the problem -----------------------------------

X, GY = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 6, 6)
GOOD = ([6, 4, 3, 3], [1, 1], [0, 0], [1, 1], 1)
BAD = {
    "input_2d": ((torch.randn(2, 4), GY) + GOOD, r"input \(n, C_in, \*spatial\) must be 3-D, 4-D or 5-D"),
    "grad_output_dims": ((X, torch.randn(2, 6, 36)) + GOOD, r"grad_output \(n, C_out, \*spatial_out\) must be 4-D"),
    "weight_shape_len": ((X, GY, [6, 4, 3], [1, 1], [0, 0], [1, 1], 1), r"weight_shape must have 4 entries"),
    "stride_len": ((X, GY, [6, 4, 3, 3], [1], [0, 0], [1, 1], 1), r"stride must have 2 entries"),
    "zero_stride": ((X, GY, [6, 4, 3, 3], [0, 1], [0, 0], [1, 1], 1), r"stride must be positive"),
    "negative_padding": ((X, GY, [6, 4, 3, 3], [1, 1], [-1, 0], [1, 1], 1), r"padding must be non-negative"),
    "zero_groups": ((X, GY, [6, 4, 3, 3], [1, 1], [0, 0], [1, 1], 0), r"groups must be positive"),
    "n_mismatch": ((X, torch.randn(3, 6, 6, 6)) + GOOD, r"dim 0 = n \(samples\).*2 and 3"),
    "c_in_mismatch": ((X, GY, [6, 2, 3, 3], [1, 1], [0, 0], [1, 1], 1), r"input has 4 channels .* expects 2"),
    "c_in_groups": ((X, GY, [6, 4, 3, 3], [1, 1], [0, 0], [1, 1], 2), r"input has 4 channels .*groups = 2 expects 8"),
    "c_out_mismatch": ((X, torch.randn(2, 5, 6, 6)) + GOOD, r"grad_output has 5 channels .*C_out = 6"),
    "c_out_groups": ((X, torch.randn(2, 3, 6, 6), [3, 2, 3, 3], [1, 1], [0, 0], [1, 1], 2),
                     r"C_out = weight_shape\[0\] = 3 must be divisible by groups = 2"),
    "kernel_too_big": ((X, GY, [6, 4, 9, 3], [1, 1], [0, 0], [1, 1], 1), r"smaller than the dilated kernel \(9\)"),
    "spatial_out_mismatch": ((X, torch.randn(2, 6, 6, 5)) + GOOD, r"grad_output spatial dim 1 is 5 .* gives 6"),
    "int_dtype": ((X.long(), GY.long()) + GOOD, r"input must have .*dtype"),
    "dtype_mismatch": ((X, GY.double()) + GOOD, r"same dtype"),
}
BAD_IMPLS = {
    "native": pytest.param(lambda *a: torch.ops.ftdfast.sq_grad_sum_conv(*a), marks=needs_native),
    "ref": sq_grad_sum_conv_ref,
}


@pytest.mark.parametrize("impl", list(BAD_IMPLS.values()), ids=list(BAD_IMPLS))
@pytest.mark.parametrize("args, message", list(BAD.values()), ids=list(BAD))
def test_bad_inputs(impl, args, message):
    with pytest.raises(RuntimeError, match=message):
        impl(*args)
