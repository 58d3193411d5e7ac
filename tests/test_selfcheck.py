"""ftdfast.native.selfcheck: the first-use check of the native ops and the fallback to the reference.

Faults are injected by replacing the op the ``ftdfast.native.ops`` wrapper calls (``torch.ops.ftdfast.<name>``)
with one that corrupts the real kernel's result or raises; the wrapper must then warn once and return
exactly what the reference returns. Everything runs on the CPU kernels (the same mechanism as CUDA).
"""
from __future__ import annotations

import dataclasses
import threading
import warnings

import pytest
import torch

from ftdfast.native import _ext, ops, selfcheck
from ftdfast.native.reference import (
    SPECS,
    fisher_distance_matrix_ref,
    fisher_distance_ref,
    sq_grad_sum_conv_ref,
    sq_grad_sum_linear_ref,
)

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")
pytestmark = needs_native

Warn = selfcheck.NativeOpFallbackWarning


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    """No decision from earlier tests, no environment variable from the caller; forget what the test decided."""
    monkeypatch.delenv(selfcheck.SELFCHECK_ENV, raising=False)
    monkeypatch.delenv(selfcheck.CUDA_NATIVE_ENV, raising=False)
    selfcheck.reset()
    yield
    selfcheck.reset()


# ----------------------------------------------------------------------------- the cases
def _gen(seed):
    return torch.Generator().manual_seed(seed)


def linear_case(dtype):
    g = _gen(10)
    return (torch.randn(4, 5, 6, generator=g, dtype=dtype), torch.randn(4, 5, 3, generator=g, dtype=dtype))


def conv_case(dtype):
    g = _gen(11)
    x = torch.randn(3, 4, 7, 5, generator=g, dtype=dtype)
    gy = torch.randn(3, 6, 7, 3, generator=g, dtype=dtype)  # kernel (3, 3), padding (1, 0), groups 2
    return (x, gy, [6, 2, 3, 3], [1, 1], [1, 0], [1, 1], 2)


def distance_case(dtype):
    g = _gen(12)
    return ([torch.rand(s, generator=g, dtype=dtype) for s in ((2, 3), (5,))],
            [torch.rand(s, generator=g, dtype=dtype) for s in ((2, 3), (5,))])


def matrix_case(dtype):
    g = _gen(13)
    return (torch.rand(3, 11, generator=g, dtype=dtype), torch.rand(4, 11, generator=g, dtype=dtype))


# name -> (wrapper, reference, inputs)
CASES = {
    "sq_grad_sum_linear": (ops.sq_grad_sum_linear, sq_grad_sum_linear_ref, linear_case),
    "sq_grad_sum_conv": (ops.sq_grad_sum_conv, sq_grad_sum_conv_ref, conv_case),
    "fisher_distance": (ops.fisher_distance, fisher_distance_ref, distance_case),
    "fisher_distance_matrix": (ops.fisher_distance_matrix, fisher_distance_matrix_ref, matrix_case),
}
DTYPES = {"f32": torch.float32, "f64": torch.float64}


def _faulty(real, fault):
    """The real kernel with its result spoilt in one of several ways; counts its calls."""
    def kernel(*args):
        kernel.calls += 1
        if fault == "raises":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        out = real(*args)
        if fault == "scaled":  # 1e-3 relative: above every tolerance, the kind of error a wrong index gives
            return out * (1 + 1e-3)
        if fault == "nan":
            return torch.full_like(out, float("nan"))
        if fault == "wrong_shape":
            return out.reshape(-1)[:1] if out.dim() else out.reshape(1)
        raise AssertionError(fault)
    kernel.calls = 0
    return kernel


def _inject(monkeypatch, name, fault):
    kernel = _faulty(getattr(torch.ops.ftdfast, name), fault)
    monkeypatch.setattr(torch.ops.ftdfast, name, kernel)
    return kernel


def _fallback_warnings(record):
    return [w for w in record if issubclass(w.category, Warn)]


# ----------------------------------------------------------------------------- correct kernels
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_correct_kernel_passes_silently_and_is_used(name, dtype, monkeypatch):
    wrapper, reference, case = CASES[name]
    real = getattr(torch.ops.ftdfast, name)
    calls = []
    monkeypatch.setattr(torch.ops.ftdfast, name, lambda *a: calls.append(1) or real(*a))
    args = case(dtype)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = wrapper(*args)
    assert not _fallback_warnings(record)
    assert len(calls) == 1 + len(SPECS[f"ftdfast::{name}"].samples(_gen(0)))  # the check's, then ours
    (result,) = selfcheck.results()
    assert (result.op, result.device, result.dtype, result.status, result.use_native) == \
        (f"ftdfast::{name}", "cpu", dtype, "ok", True)
    assert result.max_error <= result.tolerance == SPECS[f"ftdfast::{name}"].tolerance[dtype]
    torch.testing.assert_close(got, reference(*args), rtol={torch.float32: 1e-5, torch.float64: 1e-12}[dtype],
                               atol=0.0)


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_check_passes_for_every_op_and_dtype(name, dtype):
    result = selfcheck.check_op(f"ftdfast::{name}", "cpu", dtype)
    assert result.status == "ok" and result.use_native and result.error is None
    assert 0.0 <= result.max_error <= result.tolerance
    assert selfcheck.results() == []  # check() decides nothing


# ----------------------------------------------------------------------------- faulty kernels
FAULTS = ["scaled", "nan", "raises", "wrong_shape"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_faulty_kernel_warns_once_and_falls_back_to_the_reference(name, dtype, fault, monkeypatch):
    wrapper, reference, case = CASES[name]
    kernel = _inject(monkeypatch, name, fault)
    args = case(dtype)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        results = [wrapper(*args) for _ in range(3)]
    (w,) = _fallback_warnings(record)
    message = str(w.message)
    assert f"ftdfast::{name}" in message and " on cpu " in message and selfcheck.dtype_name(dtype) in message
    if fault == "raises":
        assert "RuntimeError: CUDA error: an illegal memory access" in message
    else:
        assert "max error" in message and ("inf" in message if fault != "scaled" else "e-0" in message)
    assert "ftdfast doctor" in message and w.filename == __file__  # points at the caller's line
    assert kernel.calls == 1  # only the check ran it: the first problem failed, later calls go to the reference
    want = reference(*args)
    for got in results:
        assert torch.equal(got, want)
    (result,) = selfcheck.results()
    assert result.status == ("error" if fault == "raises" else "FAIL") and not result.use_native


def test_fallback_is_per_dtype_and_per_op(monkeypatch):
    _inject(monkeypatch, "sq_grad_sum_linear", "scaled")
    with pytest.warns(Warn, match="float32"):
        ops.sq_grad_sum_linear(*linear_case(torch.float32))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ops.sq_grad_sum_linear(*linear_case(torch.float32))  # decided: no second warning
        ops.fisher_distance(*distance_case(torch.float32))  # another op: fine
    assert not _fallback_warnings(record)
    with pytest.warns(Warn, match="float64"):
        ops.sq_grad_sum_linear(*linear_case(torch.float64))
    verdicts = {(r.op, r.dtype): r.use_native for r in selfcheck.results()}
    assert verdicts == {("ftdfast::sq_grad_sum_linear", torch.float32): False,
                        ("ftdfast::fisher_distance", torch.float32): True,
                        ("ftdfast::sq_grad_sum_linear", torch.float64): False}


# ----------------------------------------------------------------------------- once per key
def test_check_runs_once_per_op_device_dtype(monkeypatch):
    checked = []
    real_check = selfcheck.check_op
    monkeypatch.setattr(selfcheck, "check_op", lambda op, device, dtype: checked.append((op, dtype))
                        or real_check(op, device, dtype))
    for _ in range(5):
        ops.sq_grad_sum_linear(*linear_case(torch.float64))
    assert checked == [("ftdfast::sq_grad_sum_linear", torch.float64)]
    ops.sq_grad_sum_linear(*linear_case(torch.float32))
    ops.sq_grad_sum_conv(*conv_case(torch.float64))
    ops.sq_grad_sum_conv(*conv_case(torch.float64))
    assert checked == [("ftdfast::sq_grad_sum_linear", torch.float64), ("ftdfast::sq_grad_sum_linear", torch.float32),
                       ("ftdfast::sq_grad_sum_conv", torch.float64)]


def test_after_the_first_call_the_decision_is_a_lookup(monkeypatch):
    ops.fisher_distance_matrix(*matrix_case(torch.float64))

    def no_first_use(*args):
        raise AssertionError("decided again")
    monkeypatch.setattr(selfcheck, "_first_use", no_first_use)
    got = ops.fisher_distance_matrix(*matrix_case(torch.float64))
    torch.testing.assert_close(got, fisher_distance_matrix_ref(*matrix_case(torch.float64)), rtol=1e-12, atol=1e-12)


def test_threads_deciding_at_once_check_once(monkeypatch):
    checked = []
    real_check = selfcheck.check_op
    monkeypatch.setattr(selfcheck, "check_op", lambda *a: checked.append(a) or real_check(*a))
    a, g = linear_case(torch.float64)
    want = sq_grad_sum_linear_ref(a, g)
    barrier = threading.Barrier(6)
    out, errors = [], []

    def work():
        try:
            barrier.wait()
            out.append(ops.sq_grad_sum_linear(a, g))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 6 and len(checked) == 1
    for got in out:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)


def test_a_check_that_calls_the_ops_does_not_recurse(monkeypatch):
    """A reference that itself goes through ftdfast.native.ops gets the reference inside the check, not a second check."""
    inner = []

    def reference_via_ops(a, g):
        inner.append(1)
        return ops.sq_grad_sum_linear(a, g)
    spec = SPECS["ftdfast::sq_grad_sum_linear"]
    monkeypatch.setitem(SPECS, spec.qualname, dataclasses.replace(spec, reference=reference_via_ops))
    kernel = _inject(monkeypatch, "sq_grad_sum_linear", "scaled")
    with pytest.warns(Warn):
        ops.sq_grad_sum_linear(*linear_case(torch.float64))
    assert len(inner) == 1 and kernel.calls == 1  # the inner call used the reference, not the kernel
    assert [r.status for r in selfcheck.results()] == ["FAIL"]


def test_the_check_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    ops.sq_grad_sum_conv(*conv_case(torch.float32))
    assert selfcheck.results() and torch.equal(torch.random.get_rng_state(), state)


# ----------------------------------------------------------------------------- environment variables
def test_selfcheck_off_uses_the_kernel_unchecked(monkeypatch):
    monkeypatch.setenv(selfcheck.SELFCHECK_ENV, "0")
    kernel = _inject(monkeypatch, "sq_grad_sum_linear", "scaled")
    args = linear_case(torch.float64)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = ops.sq_grad_sum_linear(*args)
    assert not _fallback_warnings(record)
    assert kernel.calls == 1  # the user's call only: no check
    torch.testing.assert_close(got, sq_grad_sum_linear_ref(*args) * (1 + 1e-3), rtol=1e-12, atol=0.0)
    (result,) = selfcheck.results()
    assert result.status == "unchecked" and result.use_native


def test_cuda_native_off_never_uses_cuda_kernels(monkeypatch):
    """Decided without touching a GPU, so it runs on CPU-only machines."""
    monkeypatch.setenv(selfcheck.CUDA_NATIVE_ENV, "0")
    for op in SPECS:
        result = selfcheck._decide(op, torch.device("cuda", 0), torch.float32)
        assert result.status == "disabled" and not result.use_native
        assert "FTDFAST_CUDA_NATIVE=0" in result.describe()


def test_cuda_native_off_leaves_the_cpu_kernels_on(monkeypatch):
    monkeypatch.setenv(selfcheck.CUDA_NATIVE_ENV, "0")
    ops.sq_grad_sum_linear(*linear_case(torch.float32))
    (result,) = selfcheck.results()
    assert result.status == "ok" and result.use_native


@pytest.mark.cuda
@pytest.mark.skipif(not _ext.HAS_CUDA, reason="needs the CUDA kernels")
def test_cuda_native_off_on_a_gpu_uses_the_reference(monkeypatch):
    monkeypatch.setenv(selfcheck.CUDA_NATIVE_ENV, "0")
    kernel = _inject(monkeypatch, "sq_grad_sum_linear", "raises")
    a, g = (t.cuda() for t in linear_case(torch.float32))
    got = ops.sq_grad_sum_linear(a, g)
    assert kernel.calls == 0 and got.device.type == "cuda"
    torch.testing.assert_close(got, sq_grad_sum_linear_ref(a, g), rtol=0.0, atol=0.0)


@pytest.mark.cuda
@pytest.mark.skipif(not _ext.HAS_CUDA, reason="needs the CUDA kernels")
def test_cuda_kernels_pass_their_check():
    for op in SPECS:
        for dtype in selfcheck.DTYPES:
            result = selfcheck.check_op(op, "cuda", dtype)
            assert result.status == "ok", (op, dtype, result.describe())


@pytest.mark.parametrize("env", [selfcheck.SELFCHECK_ENV, selfcheck.CUDA_NATIVE_ENV])
def test_a_bad_value_names_the_variable(env, monkeypatch):
    monkeypatch.setenv(env, "maybe")
    with pytest.raises(ValueError, match=f"{env}='maybe' is not a boolean: set it to 0 or 1"):
        selfcheck._decide("ftdfast::sq_grad_sum_linear", torch.device("cuda", 0), torch.float32)


@pytest.mark.parametrize("value,off", [("0", True), ("false", True), ("OFF", True), ("1", False), ("", False),
                                       (None, False)])
def test_env_values(value, off, monkeypatch):
    if value is not None:
        monkeypatch.setenv(selfcheck.SELFCHECK_ENV, value)
    assert selfcheck.env_off(selfcheck.SELFCHECK_ENV) is off


# ----------------------------------------------------------------------------- tracing
def test_fake_tensors_are_not_checked(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    def no_check(*args):
        raise AssertionError("checked while tracing")
    monkeypatch.setattr(selfcheck, "check_op", no_check)
    with FakeTensorMode() as mode:
        a, g = (mode.from_tensor(t) for t in linear_case(torch.float32))
        out = ops.sq_grad_sum_linear(a, g)
    assert out.shape == (3, 6) and selfcheck.results() == []


def test_meta_tensors_are_not_checked(monkeypatch):
    monkeypatch.setattr(selfcheck, "check_op", lambda *a: pytest.fail("checked a meta tensor"))
    a, g = (t.to("meta") for t in linear_case(torch.float64))
    assert ops.sq_grad_sum_linear(a, g).shape == (3, 6) and selfcheck.results() == []


def test_compiled_wrapper_matches_eager():
    torch._dynamo.reset()
    try:
        args = linear_case(torch.float64)
        compiled = torch.compile(lambda a, g: ops.sq_grad_sum_linear(a * 2.0, g) + 1.0, backend="aot_eager")
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            got = compiled(*args)
        assert not _fallback_warnings(record)
        torch.testing.assert_close(got, sq_grad_sum_linear_ref(args[0] * 2.0, args[1]) + 1.0, rtol=1e-12, atol=0.0)
    finally:
        torch._dynamo.reset()
