"""First-use self-check of the native ops, and the fallback to ``ftdfast.native.reference`` when one fails.

The first time in a process that :mod:`ftdfast.native.ops` would run a native op
(``torch.ops.ftdfast.<name>``) for a given (op, device, dtype), the op is run on
a small seeded random problem on that device and compared with its
``ftdfast.native.reference`` function on float64 CPU copies of the same inputs
(:func:`check`, a few milliseconds). If the kernel raises or its error exceeds
the op's tolerance (:data:`TOLERANCE`), ftdfast warns once
(:class:`NativeOpFallbackWarning`, naming the op, device, dtype and the error)
and the ops use the pure-PyTorch reference for that (op, device, dtype) for the
rest of the process. After the first call the decision is one dict lookup
(:func:`native_ok`).

Environment variables, read when a decision is first made:

    FTDFAST_CUDA_SELFCHECK=0   use the native kernels without the check, on every device
    FTDFAST_CUDA_NATIVE=0      never use the CUDA kernels (the CPU kernels are unaffected)

No check runs while tracing (fake or meta tensors, ``torch.compile``, CUDA graph
capture): there is nothing to compare, so the native op's fake kernel is used and
no decision is recorded; the first real call decides.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import _ext
from .reference import (
    fisher_distance_matrix_ref,
    fisher_distance_ref,
    sq_grad_sum_conv_ref,
    sq_grad_sum_linear_ref,
)

SELFCHECK_ENV = "FTDFAST_CUDA_SELFCHECK"
CUDA_NATIVE_ENV = "FTDFAST_CUDA_NATIVE"
DTYPES = (torch.float32, torch.float64)

# Largest allowed error of the native op on the self-check problems, per (op, dtype): relative to
# max |reference| for the sums of squares, absolute for the distances (which lie in [0, 1]).
TOLERANCE: Dict[Tuple[str, torch.dtype], float] = {
    ("ftdfast::sq_grad_sum_linear", torch.float64): 1e-10,
    ("ftdfast::sq_grad_sum_linear", torch.float32): 1e-4,
    ("ftdfast::sq_grad_sum_conv", torch.float64): 1e-10,
    ("ftdfast::sq_grad_sum_conv", torch.float32): 1e-4,
    ("ftdfast::fisher_distance", torch.float64): 1e-12,
    ("ftdfast::fisher_distance", torch.float32): 1e-6,
    ("ftdfast::fisher_distance_matrix", torch.float64): 1e-9,
    ("ftdfast::fisher_distance_matrix", torch.float32): 1e-5,
}
RELATIVE_ERROR_OPS = ("ftdfast::sq_grad_sum_linear", "ftdfast::sq_grad_sum_conv")


class NativeOpFallbackWarning(RuntimeWarning):
    """A native op failed its self-check; ftdfast uses the pure-PyTorch reference for it instead."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one self-check of ``op`` on ``device`` in ``dtype``.

    ``status`` is ``"ok"``, ``"FAIL"`` (error above tolerance), ``"error"`` (the kernel
    raised; ``error`` holds ``"ExceptionType: message"``), ``"unchecked"``
    (FTDFAST_CUDA_SELFCHECK=0) or ``"disabled"`` (FTDFAST_CUDA_NATIVE=0 on CUDA).
    ``use_native`` is whether the ops use the native kernel afterwards.
    """
    op: str
    device: str
    dtype: torch.dtype
    status: str
    use_native: bool
    max_error: Optional[float] = None
    tolerance: Optional[float] = None
    error: Optional[str] = None
    ms: float = 0.0

    def describe(self) -> str:
        """One line: what was found."""
        if self.status == "error":
            return f"raised {self.error}"
        if self.status in ("ok", "FAIL"):
            return f"max error {self.max_error:.2e} (tolerance {self.tolerance:.0e})"
        return {"unchecked": f"not checked ({SELFCHECK_ENV}=0)",
                "disabled": f"CUDA kernels off ({CUDA_NATIVE_ENV}=0)"}[self.status]


# ----------------------------------------------------------------------------- the problems
# Each builds (args, float64 CPU args) from a CPU generator: tensors in args are then moved to the
# device and dtype under test. Shapes are small and odd, and cover both kernel paths where there are two.

def _linear_problems(gen: torch.Generator) -> List[tuple]:
    return [(torch.randn(n, t, i, generator=gen, dtype=torch.float64),
             torch.randn(n, t, o, generator=gen, dtype=torch.float64))
            for n, t, i, o in ((5, 3, 7, 6), (4, 1, 9, 5), (3, 11, 5, 4))]  # fused, t = 1 GEMM, t > 8 BLAS


def _conv_problems(gen: torch.Generator) -> List[tuple]:
    out = []
    # (n, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
    for n, ci, co, spatial, kernel, stride, padding, dilation, groups in (
            (3, 4, 6, (7, 6), (3, 2), (2, 1), (1, 0), (1, 2), 2),
            (2, 3, 5, (9,), (3,), (1,), (1,), (2,), 1)):
        x = torch.randn((n, ci) + spatial, generator=gen, dtype=torch.float64)
        spatial_out = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                            for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation))
        gy = torch.randn((n, co) + spatial_out, generator=gen, dtype=torch.float64)
        out.append((x, gy, [co, ci // groups, *kernel], list(stride), list(padding), list(dilation), groups))
    return out


def _distance_problems(gen: torch.Generator) -> List[tuple]:
    shapes = ((3, 5), (7,), (), (0,), (2, 1, 3))
    return [([torch.rand(s, generator=gen, dtype=torch.float64) for s in shapes],
             [torch.rand(s, generator=gen, dtype=torch.float64) for s in shapes])]


def _matrix_problems(gen: torch.Generator) -> List[tuple]:
    return [(torch.rand(3, 37, generator=gen, dtype=torch.float64),
             torch.rand(2, 37, generator=gen, dtype=torch.float64))]


# op -> (problems, reference)
_PROBLEMS: Dict[str, Tuple[Callable[[torch.Generator], List[tuple]], Callable]] = {
    "ftdfast::sq_grad_sum_linear": (_linear_problems, sq_grad_sum_linear_ref),
    "ftdfast::sq_grad_sum_conv": (_conv_problems, sq_grad_sum_conv_ref),
    "ftdfast::fisher_distance": (_distance_problems, fisher_distance_ref),
    "ftdfast::fisher_distance_matrix": (_matrix_problems, fisher_distance_matrix_ref),
}
OPS = tuple(_PROBLEMS)


def _moved(args: Sequence, device: torch.device, dtype: torch.dtype) -> list:
    def move(x):
        if isinstance(x, torch.Tensor):
            return x.to(device=device, dtype=dtype)
        if isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
            return [t.to(device=device, dtype=dtype) for t in x]
        return x
    return [move(x) for x in args]


def _error(op: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, device: torch.device) -> float:
    """max |got - want| (relative to max |want| for the sums of squares); inf for a wrong shape/dtype/device or NaN."""
    if (not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != dtype
            or got.device != device):
        return float("inf")
    if want.numel() == 0:
        return 0.0
    err = (got.detach().cpu().double() - want).abs().max().item()
    if op in RELATIVE_ERROR_OPS:
        err /= max(want.abs().max().item(), 1e-300)
    return err if err == err else float("inf")  # NaN -> inf


def env_off(name: str) -> bool:
    """Whether the 0/1 environment variable ``name`` is set to off (unset: on); another value raises ValueError."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return False
    if value in ("0", "false", "no", "off"):
        return True
    raise ValueError(f"{name}={os.environ[name]!r} is not a boolean: set it to 0 or 1 (or unset it)")


def check(op: str, device: torch.device | str, dtype: torch.dtype) -> CheckResult:
    """Run the native ``op`` (e.g. ``"ftdfast::sq_grad_sum_linear"``) on its small self-check problems
    on ``device`` in ``dtype`` (float32 or float64) and compare with its reference on float64 CPU copies.

    Ignores the environment variables and records nothing: :func:`native_ok` decides from this.
    Needs the native extension with a kernel for ``device``.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    make_problems, reference = _PROBLEMS[op]
    native = getattr(torch.ops.ftdfast, op.split("::", 1)[1])
    tolerance = TOLERANCE[(op, dtype)]
    gen = torch.Generator().manual_seed(0)  # its own generator: the global RNG streams are untouched
    worst, error = 0.0, None
    start = time.perf_counter()
    with torch.no_grad():
        for args in make_problems(gen):
            # The native op sees the test dtype; the reference float64 copies of the same (rounded) values.
            inputs = _moved(args, device, dtype)
            want = reference(*_moved(inputs, torch.device("cpu"), torch.float64))
            try:
                got = native(*inputs)
                err = _error(op, got, want, dtype, device)
            except Exception as exc:  # a kernel that raises on valid input is as broken as a wrong one
                error = f"{type(exc).__name__}: {exc}".strip()
                break
            worst = max(worst, err)
            if worst > tolerance:  # failed: no need to run a broken kernel again
                break
    ms = (time.perf_counter() - start) * 1e3
    status = "error" if error is not None else ("ok" if worst <= tolerance else "FAIL")
    return CheckResult(op, str(device), dtype, status, status == "ok", None if error else worst, tolerance,
                       error, ms)


def _decide(op: str, device: torch.device, dtype: torch.dtype) -> CheckResult:
    """What the ops do for (op, device, dtype) under the environment variables: check, or not."""
    if device.type == "cuda" and env_off(CUDA_NATIVE_ENV):
        return CheckResult(op, str(device), dtype, "disabled", False)
    if env_off(SELFCHECK_ENV):
        return CheckResult(op, str(device), dtype, "unchecked", True)
    return check(op, device, dtype)


# ----------------------------------------------------------------------------- the decisions
_USE_NATIVE: Dict[tuple, bool] = {}  # (op, device, dtype) -> use the native kernel
_RESULTS: Dict[tuple, CheckResult] = {}
_LOCK = threading.Lock()
_IN_CHECK = threading.local()


def native_ok(op: str, like: torch.Tensor, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :mod:`ftdfast.native.ops` may run the native ``op`` on inputs like ``like`` (its ``device`` and
    ``dtype``, which the caller has at hand): the extension has a kernel for the device, and it passed
    the self-check (or the environment says to skip it).

    The first call per (op, device, dtype) decides, running the self-check (and warning if it fails);
    later calls are one dict lookup.
    """
    verdict = _USE_NATIVE.get((op, device, dtype))
    if verdict is None:
        return _first_use(op, like, device, dtype)
    return verdict


def _tracing(like: torch.Tensor) -> bool:
    """Whether the call is traced rather than run: compile, fake or meta tensors, CUDA graph capture."""
    if like.device.type == "meta" or torch.compiler.is_compiling():
        return True
    if isinstance(like, torch._subclasses.FakeTensor) or torch._guards.detect_fake_mode([like]) is not None:
        return True
    return like.device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _first_use(op: str, like: torch.Tensor, device: torch.device, dtype: torch.dtype) -> bool:
    key = (op, device, dtype)
    if not _ext.has_kernel(op, device):
        _USE_NATIVE[key] = False  # no kernel for this device type: nothing to check
        return False
    if _tracing(like):
        return True  # the fake kernel gives the shapes; the first real call decides
    if getattr(_IN_CHECK, "active", False):
        return False  # called from inside a self-check: the reference, and no decision recorded
    with _LOCK:
        verdict = _USE_NATIVE.get(key)
        if verdict is not None:  # another thread decided meanwhile
            return verdict
        _IN_CHECK.active = True
        try:
            result = _decide(op, device, dtype)
        finally:
            _IN_CHECK.active = False
        _RESULTS[key] = result
        _USE_NATIVE[key] = result.use_native
    if result.status in ("FAIL", "error"):
        warnings.warn(
            f"ftdfast: the native op {op} on {result.device} in {dtype_name(result.dtype)} failed its "
            f"self-check against the pure-PyTorch reference: {result.describe()}. ftdfast uses the reference "
            f"(slower, same results) for this op, device and dtype for the rest of the process. Please report "
            f"this with the output of `ftdfast doctor`; {SELFCHECK_ENV}=0 skips the check, "
            f"{CUDA_NATIVE_ENV}=0 turns the CUDA kernels off.",
            NativeOpFallbackWarning, stacklevel=5)  # the caller of the ftdfast.native.ops function
    return result.use_native


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).replace("torch.", "")


def results() -> List[CheckResult]:
    """The self-checks decided so far in this process (not the devices without a kernel), in order."""
    with _LOCK:
        return list(_RESULTS.values())


def reset() -> None:
    """Forget every decision: the next call of each op checks again (for tests)."""
    with _LOCK:
        _USE_NATIVE.clear()
        _RESULTS.clear()
