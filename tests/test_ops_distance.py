"""fisher_distance and fisher_distance_matrix: native kernels, pure-PyTorch references and the ops wrappers.

Everything is checked against an independent float64 oracle: the Hellinger
distance written out from its definition on the concatenated lists,
d = sqrt(sum_j (sqrt(a_j / A) - sqrt(b_j / B))^2 / 2).
"""

from __future__ import annotations

import math

import pytest
import torch

from ftdfast.native import _ext, ops
from ftdfast.native.reference import fisher_distance_matrix_ref, fisher_distance_ref

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")

# Lists of per-parameter shapes, with readable ids.
SHAPES = {
    "one_tensor": [(37,)],
    "odd_shapes": [(3, 5), (7,), (2, 3, 4), (1, 1, 1, 5), (11, 13)],
    "scalar_param": [(), (4,), ()],
    "with_empty": [(0,), (6, 2), (0, 3)],
    # Several parallel chunks (65536 entries each) in one tensor, odd remainders.
    "multi_chunk": [(3, 70001), (5,), (131073,)],
}
# Explicit tolerances on d (in [0, 1]): float64 is near-exact, float32 inputs are
# checked against the float64 oracle of the same float32 values.
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}
# The matrix uses the identity 1 - <sqrt p, sqrt q> (cancellation near d = 0).
MATRIX_TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def oracle(f_a, f_b) -> float:
    """The distance in float64, from its definition, one flattened list at a time."""
    a = torch.cat([t.detach().double().flatten() for t in f_a])
    b = torch.cat([t.detach().double().flatten() for t in f_b])
    p, q = a / a.sum(), b / b.sum()
    return math.sqrt(0.5 * float(((p.sqrt() - q.sqrt()) ** 2).sum()))


def make(shapes, dtype, seed=0):
    """Non-negative Fisher-like diagonals (squared normals, so entries span orders of magnitude)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).square().to(dtype) for s in shapes]


def assert_distance(result: torch.Tensor, expected: float, dtype: torch.dtype, tol=None) -> None:
    assert result.shape == () and result.dtype == dtype
    torch.testing.assert_close(result.double(), torch.tensor(expected, dtype=torch.float64), **(tol or TOL[dtype]))


def _native(f_a, f_b):
    return torch.ops.ftdfast.fisher_distance(f_a, f_b)


def _native_matrix(rows, cols):
    return torch.ops.ftdfast.fisher_distance_matrix(rows, cols)


IMPLS = {
    "native": pytest.param(_native, marks=needs_native),
    "ref": fisher_distance_ref,
    "ops": ops.fisher_distance,
}
MATRIX_IMPLS = {
    "native": pytest.param(_native_matrix, marks=needs_native),
    "ref": fisher_distance_matrix_ref,
    "ops": ops.fisher_distance_matrix,
}
DTYPES = dict(argnames="dtype", argvalues=[torch.float64, torch.float32], ids=["f64", "f32"])


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize(**DTYPES)
@pytest.mark.parametrize("shapes", list(SHAPES.values()), ids=list(SHAPES))
def test_matches_oracle(impl, dtype, shapes):
    f_a, f_b = make(shapes, dtype, seed=0), make(shapes, dtype, seed=1)
    assert_distance(impl(f_a, f_b), oracle(f_a, f_b), dtype)


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize(**DTYPES)
def test_identical_inputs_give_zero(impl, dtype):
    f = make(SHAPES["odd_shapes"], dtype)
    assert impl(f, [t.clone() for t in f]).item() == 0.0


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize(**DTYPES)
def test_disjoint_supports_give_one(impl, dtype):
    f_a = [torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=dtype), torch.zeros(3, dtype=dtype)]
    f_b = [torch.tensor([0.0, 0.0, 3.0, 0.5], dtype=dtype), torch.tensor([0.0, 4.0, 0.0], dtype=dtype)]
    assert_distance(impl(f_a, f_b), 1.0, dtype)


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
def test_symmetric_and_scale_invariant(impl):
    f_a, f_b = make(SHAPES["odd_shapes"], torch.float64, 2), make(SHAPES["odd_shapes"], torch.float64, 3)
    d = impl(f_a, f_b)
    assert_distance(impl(f_b, f_a), d.item(), torch.float64)
    assert_distance(impl([7.0 * t for t in f_a], f_b), d.item(), torch.float64)
    assert_distance(impl(f_a, [1e-30 * t for t in f_b]), d.item(), torch.float64)


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
def test_float32_close_to_float64(impl):
    """The same values in float32 and float64 agree to float32 precision (float64 accumulation)."""
    f_a, f_b = make(SHAPES["multi_chunk"], torch.float32, 4), make(SHAPES["multi_chunk"], torch.float32, 5)
    d32 = impl(f_a, f_b)
    d64 = impl([t.double() for t in f_a], [t.double() for t in f_b])
    torch.testing.assert_close(d32.double(), d64, rtol=1e-6, atol=1e-7)


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3], ids=["1thread", "2threads", "3threads"])
def test_native_deterministic_across_thread_counts(threads):
    f_a, f_b = make(SHAPES["multi_chunk"], torch.float64, 6), make(SHAPES["multi_chunk"], torch.float64, 7)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _native(f_a, f_b)
        torch.set_num_threads(threads)
        result = _native(f_a, f_b)
    finally:
        torch.set_num_threads(old)
    assert result.item() == single.item()
    assert_distance(result, oracle(f_a, f_b), torch.float64)


@needs_native
def test_native_non_contiguous_inputs():
    base_a = make([(6, 10)], torch.float64, 8)[0]
    base_b = make([(10, 6)], torch.float64, 9)[0]
    f_a = [base_a.T, base_a[:, ::3], base_a[::2, 1]]  # (10, 6), (6, 4), (3,)
    f_b = [base_b, base_b.T[:, ::3], base_b.T[::2, 2]]
    assert not f_a[0].is_contiguous() and not f_a[1].is_contiguous() and not f_b[1].is_contiguous()
    assert_distance(_native(f_a, f_b), oracle(f_a, f_b), torch.float64)


@needs_native
@pytest.mark.parametrize("shapes", [SHAPES["one_tensor"], SHAPES["scalar_param"]], ids=["one", "scalar"])
def test_opcheck(shapes):
    f_a, f_b = make(shapes, torch.float64, 0), make(shapes, torch.float64, 1)
    torch.library.opcheck(torch.ops.ftdfast.fisher_distance.default, (f_a, f_b))


@needs_native
def test_meta_shape():
    f = [torch.empty(3, 4, device="meta"), torch.empty(5, device="meta")]
    out = torch.ops.ftdfast.fisher_distance(f, f)
    assert out.shape == () and out.device.type == "meta" and out.dtype == torch.float32


def test_ops_falls_back_without_native(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    f_a, f_b = make(SHAPES["odd_shapes"], torch.float64, 0), make(SHAPES["odd_shapes"], torch.float64, 1)
    assert_distance(ops.fisher_distance(f_a, f_b), oracle(f_a, f_b), torch.float64)


def test_ops_other_float_dtype_uses_ref():
    f_a, f_b = make(SHAPES["odd_shapes"], torch.bfloat16, 0), make(SHAPES["odd_shapes"], torch.bfloat16, 1)
    result = ops.fisher_distance(f_a, f_b)
    assert result.dtype == torch.bfloat16
    torch.testing.assert_close(result.double(), torch.tensor(oracle(f_a, f_b), dtype=torch.float64),
                               rtol=1e-2, atol=1e-2)


# --- the matrix ----------------------------------------------------------------------------

# (R, C, P)
MATRIX_SHAPES = {
    "1x1": (1, 1, 9),
    "3x5": (3, 5, 17),
    "p1": (2, 3, 1),
    "r0": (0, 4, 8),
    "wide": (4, 2, 70001),
    # 2 x 4 register tiles with remainders (5 = 2 + 2 + 1 rows, 7 = 4 + 3 columns), blocks of 4096 + a tail.
    "tiles_5x7": (5, 7, 2 * 4096 + 13),
}


def matrix_oracle(rows, cols) -> torch.Tensor:
    return torch.tensor([[oracle([r], [c]) for c in cols] for r in rows], dtype=torch.float64).reshape(
        rows.shape[0], cols.shape[0])


@pytest.mark.parametrize("impl", list(MATRIX_IMPLS.values()), ids=list(MATRIX_IMPLS))
@pytest.mark.parametrize(**DTYPES)
@pytest.mark.parametrize("shape", list(MATRIX_SHAPES.values()), ids=list(MATRIX_SHAPES))
def test_matrix_matches_oracle(impl, dtype, shape):
    r, c, p = shape
    rows, cols = make([(r, p)], dtype, 10)[0], make([(c, p)], dtype, 11)[0]
    result = impl(rows, cols)
    assert result.shape == (r, c) and result.dtype == dtype
    if r == 1 and p == 1:
        return
    torch.testing.assert_close(result.double(), matrix_oracle(rows, cols), **MATRIX_TOL[dtype])


@pytest.mark.parametrize("impl", list(MATRIX_IMPLS.values()), ids=list(MATRIX_IMPLS))
@pytest.mark.parametrize(**DTYPES)
def test_matrix_matches_pairwise_op(impl, dtype):
    rows, cols = make([(4, 300)], dtype, 12)[0], make([(3, 300)], dtype, 13)[0]
    cols[1] = 5.0 * rows[2]  # proportional pair: d = 0
    cols[2, :150] = 0.0
    rows[0, 150:] = 0.0  # disjoint pair: d = 1
    expected = torch.stack([torch.stack([ops.fisher_distance([r], [c]) for c in cols]) for r in rows])
    assert expected[2, 1].item() < 1e-6 and expected[0, 2].item() > 1 - 1e-6
    result = impl(rows, cols)
    tol = dict(MATRIX_TOL[dtype], atol=1e-7 if dtype == torch.float64 else 1e-4)  # sqrt of rounding near d = 0
    torch.testing.assert_close(result.double(), expected.double(), **tol)
    assert result.min() >= 0 and result.max() <= 1


@pytest.mark.parametrize("impl", list(MATRIX_IMPLS.values()), ids=list(MATRIX_IMPLS))
def test_matrix_same_tensor_both_sides(impl):
    rows = make([(5, 40)], torch.float64, 14)[0]
    result = impl(rows, rows)
    torch.testing.assert_close(result, matrix_oracle(rows, rows), rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(result, result.T, rtol=0, atol=1e-15)
    assert result.diagonal().abs().max() <= 1e-7


@pytest.mark.parametrize("impl", list(MATRIX_IMPLS.values()), ids=list(MATRIX_IMPLS))
def test_matrix_float32_close_to_float64(impl):
    rows, cols = make([(3, 5000)], torch.float32, 15)[0], make([(4, 5000)], torch.float32, 16)[0]
    torch.testing.assert_close(impl(rows, cols).double(), impl(rows.double(), cols.double()), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", list(MATRIX_IMPLS.values()), ids=list(MATRIX_IMPLS))
def test_matrix_float32_zeros_and_subnormals(impl):
    """Exact zeros (dead units) and subnormal entries: where the fast float square root is not defined."""
    rows, cols = make([(3, 5003)], torch.float32, 19)[0], make([(4, 5003)], torch.float32, 20)[0]
    rows[:, ::3] = 0.0
    cols[1, 100:4000] = 0.0
    rows[2, 7:900:5] = 1e-40  # subnormal in float32
    cols[3, 11:2000:7] = 3e-42
    assert (rows[2, 7] > 0) and (rows[2, 7] < torch.finfo(torch.float32).tiny)
    result = impl(rows, cols)
    torch.testing.assert_close(result.double(), matrix_oracle(rows, cols), **MATRIX_TOL[torch.float32])


@pytest.mark.parametrize(**DTYPES)
def test_matrix_close_pairs_from_separate_tensors(dtype):
    """Near-identical rows in different tensors: the close-pair pass keeps d accurate near 0."""
    rows = make([(3, 9000)], dtype, 21)[0]
    cols = rows.clone()
    cols[0] = cols[0] * 2.5  # proportional: d = 0
    cols[1, :50] *= 1.01  # d of about 1e-3
    result = ops.fisher_distance_matrix(rows, cols)
    expected = matrix_oracle(rows, cols)
    assert 1e-5 < expected[1, 1] < 1e-2
    tol = dict(rtol=1e-6, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(result.diagonal().double(), expected.diagonal(), **tol)
    torch.testing.assert_close(result.double(), expected, **MATRIX_TOL[dtype])


@needs_native
def test_matrix_native_independent_of_threads():
    rows, cols = make([(3, 70001)], torch.float32, 22)[0], make([(2, 70001)], torch.float32, 23)[0]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _native_matrix(rows, cols)
        torch.set_num_threads(max(2, before))
        many = _native_matrix(rows, cols)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


@needs_native
def test_matrix_native_non_contiguous_inputs():
    rows = make([(30, 3)], torch.float64, 17)[0].T  # (3, 30), column-major
    cols = make([(4, 60)], torch.float64, 18)[0][:, ::2]  # (4, 30), strided
    assert not rows.is_contiguous() and not cols.is_contiguous()
    torch.testing.assert_close(_native_matrix(rows, cols), matrix_oracle(rows, cols), **MATRIX_TOL[torch.float64])


@needs_native
@pytest.mark.parametrize("shape", [MATRIX_SHAPES["3x5"], MATRIX_SHAPES["r0"]], ids=["3x5", "r0"])
def test_matrix_opcheck(shape):
    r, c, p = shape
    rows, cols = make([(r, p)], torch.float64, 0)[0], make([(c, p)], torch.float64, 1)[0]
    torch.library.opcheck(torch.ops.ftdfast.fisher_distance_matrix.default, (rows, cols))


@needs_native
def test_matrix_meta_shape():
    out = _native_matrix(torch.empty(3, 7, device="meta"), torch.empty(5, 7, device="meta"))
    assert out.shape == (3, 5) and out.device.type == "meta"


def test_matrix_ops_falls_back_without_native(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    rows, cols = make([(3, 20)], torch.float64, 0)[0], make([(2, 20)], torch.float64, 1)[0]
    torch.testing.assert_close(ops.fisher_distance_matrix(rows, cols), matrix_oracle(rows, cols),
                               **MATRIX_TOL[torch.float64])


# --- bad inputs: every implementation names the problem -----------------------------------


def _f(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


BAD = {
    "length_mismatch": (([_f(1.0), _f(2.0)], [_f(1.0)]), r"f_a and f_b must have the same length.*2 and 1"),
    "shape_mismatch": (([_f(1.0), torch.ones(2, 3)], [_f(1.0), torch.ones(3, 2)]),
                       r"f_a\[1\] and f_b\[1\] must have the same shape, got \[2, 3\] and \[3, 2\]"),
    "negative_a": (([_f(1.0), _f(2.0, -0.5)], [_f(1.0), _f(1.0, 1.0)]), r"f_a\[1\] has a negative entry \(min -0.5"),
    "negative_b": (([_f(1.0)], [_f(-1.0)]), r"f_b\[0\] has a negative entry"),
    "zeros_a": (([torch.zeros(3), torch.zeros(())], [torch.ones(3), torch.ones(())]), r"f_a is all zeros"),
    "zeros_b": (([torch.ones(3)], [torch.zeros(3)]), r"f_b is all zeros"),
    "nan": (([_f(1.0, float("nan"))], [_f(1.0, 1.0)]), r"f_a has NaN or infinite entries"),
    "int_dtype": (([torch.ones(3, dtype=torch.int64)], [torch.ones(3, dtype=torch.int64)]),
                  r"f_a\[0\] must have .*dtype"),
    "dtype_mismatch": (([_f(1.0), _f(2.0)], [_f(1.0), _f(2.0, dtype=torch.float64)]),
                       r"f_a\[0\] and f_b\[1\] must have the same dtype"),
}
BAD_IMPLS = {
    "native": pytest.param(_native, marks=needs_native),
    "ref": fisher_distance_ref,
    "ops": ops.fisher_distance,
}


@pytest.mark.parametrize("impl", list(BAD_IMPLS.values()), ids=list(BAD_IMPLS))
@pytest.mark.parametrize("args, message", list(BAD.values()), ids=list(BAD))
def test_bad_inputs(impl, args, message):
    with pytest.raises(RuntimeError, match=message):
        impl(*args)


@pytest.mark.parametrize("impl", [fisher_distance_ref, ops.fisher_distance], ids=["ref", "ops"])
def test_empty_lists(impl):
    with pytest.raises(RuntimeError, match=r"f_a and f_b must not be empty"):
        impl([], [])


@pytest.mark.parametrize("impl", list(BAD_IMPLS.values()), ids=list(BAD_IMPLS))
def test_mixed_devices(impl):
    with pytest.raises(RuntimeError, match=r"f_a\[0\] and f_b\[0\] must be on the same device"):
        impl([torch.ones(3)], [torch.ones(3, device="meta")])


MATRIX_BAD = {
    "rows_1d": ((torch.ones(5), torch.ones(2, 5)), r"rows \(R, P\) must be 2-D"),
    "cols_3d": ((torch.ones(2, 5), torch.ones(1, 2, 5)), r"cols \(C, P\) must be 2-D"),
    "p_mismatch": ((torch.ones(2, 5), torch.ones(3, 4)), r"dim 1 = P \(parameters\), got 5 and 4"),
    "negative_row": ((torch.tensor([[1.0, 2.0], [1.0, -3.0]]), torch.ones(1, 2)), r"rows\[1\] has a negative entry"),
    "negative_col": ((torch.ones(1, 2), torch.tensor([[-1.0, 2.0]])), r"cols\[0\] has a negative entry"),
    "zero_row": ((torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.ones(1, 2)), r"rows\[1\] is all zeros"),
    "p0": ((torch.ones(2, 0), torch.ones(1, 0)), r"rows\[0\] is all zeros"),
    "int_dtype": ((torch.ones(2, 3, dtype=torch.int32), torch.ones(2, 3, dtype=torch.int32)), r"rows must have .*dtype"),
    "dtype_mismatch": ((torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float64)), r"same dtype"),
}
MATRIX_BAD_IMPLS = {
    "native": pytest.param(_native_matrix, marks=needs_native),
    "ref": fisher_distance_matrix_ref,
    "ops": ops.fisher_distance_matrix,
}


@pytest.mark.parametrize("impl", list(MATRIX_BAD_IMPLS.values()), ids=list(MATRIX_BAD_IMPLS))
@pytest.mark.parametrize("args, message", list(MATRIX_BAD.values()), ids=list(MATRIX_BAD))
def test_matrix_bad_inputs(impl, args, message):
    with pytest.raises(RuntimeError, match=message):
        impl(*args)


@pytest.mark.skipif(not _ext.HAS_NATIVE, reason="native extension not built")
@pytest.mark.parametrize("eps", [0.02, 0.06, 0.1, 0.2, 0.5], ids=lambda e: f"eps{e}")
def test_native_one_pass_and_two_pass_regimes_agree_with_the_float64_oracle(eps):
    """The CPU op reads once (Hellinger inner product) for d^2 >= 1e-2 and adds a second,
    cancellation-free pass below: both sides of that switch must match the oracle."""
    g = torch.Generator().manual_seed(21)
    a = [torch.rand(257, 3, generator=g, dtype=torch.float64), torch.rand(1001, generator=g, dtype=torch.float64)]
    b = [t * (1 + eps * torch.randn(t.shape, generator=g, dtype=torch.float64)).abs() for t in a]
    want = float(fisher_distance_ref(a, b))
    got = float(ops.fisher_distance(a, b))
    assert got == pytest.approx(want, rel=1e-11)
    got32 = float(ops.fisher_distance([t.float() for t in a], [t.float() for t in b]))
    want32 = float(fisher_distance_ref([t.float().double() for t in a], [t.float().double() for t in b]))
    assert got32 == pytest.approx(want32, rel=2e-6)
