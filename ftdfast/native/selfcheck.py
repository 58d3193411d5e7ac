"""First-use self-check of the native ops, and the fallback to ``ftdfast.native.reference`` when one fails.

The first time in a process that :mod:`ftdfast.native.ops` would run a native op
(``torch.ops.ftdfast.<name>``) for a given (op, device, dtype), the op is run on
a small seeded random problem on that device and compared with its
``ftdfast.native.reference`` function on float64 CPU copies of the same inputs
(:func:`check`, a few milliseconds). If the kernel raises or its error exceeds
the op's tolerance (its spec's, :data:`ftdfast.native.reference.SPECS`), ftdfast warns once
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
from typing import Dict, List, Optional

import torch

from . import _ext
from .reference import KERNEL_DTYPES, SPECS
from .spec import moved

SELFCHECK_ENV = "FTDFAST_CUDA_SELFCHECK"
CUDA_NATIVE_ENV = "FTDFAST_CUDA_NATIVE"
DTYPES = KERNEL_DTYPES


class NativeOpFallbackWarning(RuntimeWarning):
    """A native op failed its self-check; ftdfast uses the pure-PyTorch reference for it instead."""


@dataclasses.dataclass(frozen=True)
class OpCheckResult:
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


def env_off(name: str) -> bool:
    """Whether the 0/1 environment variable ``name`` is set to off (unset: on); another value raises ValueError."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return False
    if value in ("0", "false", "no", "off"):
        return True
    raise ValueError(f"{name}={os.environ[name]!r} is not a boolean: set it to 0 or 1 (or unset it)")


def check_op(op: str, device: torch.device | str, dtype: torch.dtype) -> OpCheckResult:
    """Run the native ``op`` (e.g. ``"ftdfast::sq_grad_sum_linear"``) on its spec's samples
    (:data:`ftdfast.native.reference.SPECS`) on ``device`` in ``dtype`` (float32 or float64) and compare
    with its reference on float64 CPU copies, within the spec's tolerance for ``dtype``.

    Ignores the environment variables and records nothing: :func:`native_ok` decides from this.
    Needs the native extension with a kernel for ``device``.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    spec = SPECS[op]
    tolerance = spec.tolerance[dtype]
    gen = torch.Generator().manual_seed(0)  # its own generator: the global RNG streams are untouched
    worst, error = 0.0, None
    start = time.perf_counter()
    with torch.no_grad():
        for _, inputs in spec.sample_inputs(gen, device, dtype):
            # The native op sees the test dtype; the reference float64 copies of the same (rounded) values.
            want = spec.reference(*moved(inputs, torch.device("cpu"), torch.float64))
            try:
                got = spec.native(*inputs)
                err = spec.error(got, want, device, dtype)
            except Exception as exc:  # a kernel that raises on valid input is as broken as a wrong one
                error = f"{type(exc).__name__}: {exc}".strip()
                break
            worst = max(worst, err)
            if worst > tolerance:  # failed: no need to run a broken kernel again
                break
    ms = (time.perf_counter() - start) * 1e3
    status = "error" if error is not None else ("ok" if worst <= tolerance else "FAIL")
    return OpCheckResult(op, str(device), dtype, status, status == "ok", None if error else worst, tolerance,
                       error, ms)


def _decide(op: str, device: torch.device, dtype: torch.dtype) -> OpCheckResult:
    """What the ops do for (op, device, dtype) under the environment variables: check, or not."""
    if device.type == "cuda" and env_off(CUDA_NATIVE_ENV):
        return OpCheckResult(op, str(device), dtype, "disabled", False)
    if env_off(SELFCHECK_ENV):
        return OpCheckResult(op, str(device), dtype, "unchecked", True)
    return check_op(op, device, dtype)


# ----------------------------------------------------------------------------- the decisions
_USE_NATIVE: Dict[tuple, bool] = {}  # (op, device, dtype) -> use the native kernel
_RESULTS: Dict[tuple, OpCheckResult] = {}
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


def results() -> List[OpCheckResult]:
    """The self-checks decided so far in this process (not the devices without a kernel), in order."""
    with _LOCK:
        return list(_RESULTS.values())


def reset() -> None:
    """Forget every decision: the next call of each op checks again (for tests)."""
    with _LOCK:
        _USE_NATIVE.clear()
        _RESULTS.clear()
