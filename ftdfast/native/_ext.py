"""Soft loader for the native extension ``ftdfast._C``.

Importing ``ftdfast._C`` loads the shared library, whose static initialisers
register the ``torch.ops.ftdfast.*`` operators. A missing or broken build never
makes ``import ftdfast`` fail: it is recorded here, and callers that need the
native ops either fall back to ``ftdfast.native.reference`` or call
:func:`require_native` for a clear error.

Attributes:
    HAS_NATIVE: the extension imported and its ops are registered.
    HAS_CUDA: the extension has CUDA kernels (built with CUDA).
    LOAD_ERROR: ``"ExceptionType: message"`` from the failed import, else None.
    LIBRARY_PATH: the file of the loaded extension (``.../ftdfast/_C*.so``), else None.
    BUILD_COMMAND: the shell command, run in the repository root, that builds it.
"""

from __future__ import annotations

import functools

import torch

BUILD_COMMAND = (
    'CUDA_HOME=/usr/local/cuda TORCH_CUDA_ARCH_LIST="9.0" MAX_JOBS=2 '
    "pip install --no-build-isolation -e ."
)
_BUILD_HINT = "(add FTDFAST_CUDA=0 for a CPU-only build; see setup.py for the FTDFAST_* options)"

try:
    from ftdfast import _C  # noqa: F401  (import registers the ops)
except Exception as exc:  # ImportError, OSError (bad .so), RuntimeError (registration)
    HAS_NATIVE = False
    LOAD_ERROR: str | None = f"{type(exc).__name__}: {exc}"
    LIBRARY_PATH: str | None = None
else:
    HAS_NATIVE = True
    LOAD_ERROR = None
    LIBRARY_PATH = getattr(_C, "__file__", None)


@functools.lru_cache(maxsize=None)
def _has_kernel(op: str, dispatch_key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key)
    except RuntimeError:  # unknown op or dispatch key name
        return False


def has_kernel(op: str, device: torch.device | str) -> bool:
    """Whether the native op ``op`` (e.g. ``"ftdfast::sq_grad_sum_linear"``) has a kernel for ``device``'s type."""
    if not HAS_NATIVE:
        return False
    return _has_kernel(op, torch.device(device).type.upper())


HAS_CUDA = has_kernel("ftdfast::sq_grad_sum_linear", "cuda")


def require_native(what: str) -> None:
    """Raise RuntimeError naming ``what``, the load error and the build command if the extension is missing."""
    if HAS_NATIVE:
        return
    raise RuntimeError(
        f"{what} needs the native extension ftdfast._C, which is not available "
        f"(load error: {LOAD_ERROR}). Build it in the repository root with:\n"
        f"    {BUILD_COMMAND}\n{_BUILD_HINT}"
    )
