"""The quantity of the empirical Fisher: ``S = sum_n G_n * G_n`` from factored per-sample gradients.

:func:`sum_of_squares` takes the factors one parameter received from every call
that used it in a forward pass (usually one), adds the calls' per-sample gradients
and returns the sum over samples of their elementwise squares, shaped like the
parameter, in float32 for float16/bfloat16 factors and in their own dtype otherwise
(:func:`ftdfast.fisher.factors.square_dtype`). It only uses the factor protocol of
:mod:`ftdfast.fisher.factors` (``n``, ``shape``, ``dtype``, ``per_sample``, and the
optional ``square_sum``, ``merge`` and ``source``): any factor class works, the
built-in ones and those of the torch.func fallback alike. No tensor of shape
(N, *param_shape) is built: closed forms where they exist, otherwise chunks bounded
by ``FTDFAST_WORKSPACE_MB``.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Sequence

import torch

from ..native import ops
from ..native.reference import sq_grad_sum_linear_ref
from ..workspace import chunk_size
from .factors import _numel, chunked_square_sum, square_dtype, widen


@dataclass(frozen=True)
class Impl:
    """Which closed forms to use: ``name`` "ref" (pure PyTorch) or "auto" (native ops where built).

    ``linear``: the Linear square-sum, (a (n, t, i), b (n, t, o)) -> (o, i).
    """

    name: str
    linear: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_IMPLS = {"ref": Impl("ref", sq_grad_sum_linear_ref), "auto": Impl("auto", lambda a, b: ops.sq_grad_sum_linear(a, b))}
_IMPL = contextvars.ContextVar("ftdfast_squares_impl", default="auto")


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
    """Within the block, closed forms use ``"ref"`` (pure PyTorch) or ``"auto"`` (native ops where built)."""
    if impl not in _IMPLS:
        raise ValueError(f"impl must be 'auto' or 'ref', got {impl!r}")
    token = _IMPL.set(impl)
    try:
        yield
    finally:
        _IMPL.reset(token)


def current_impl() -> Impl:
    return _IMPLS[_IMPL.get()]


def _merge(factors: Sequence) -> List:
    """Merge calls whose per-sample gradients add up in closed form (factors of one class that can merge)."""
    if len(factors) == 1:
        return list(factors)
    kind = type(factors[0])
    if all(type(f) is kind for f in factors):
        merged = kind.merge(factors) if hasattr(kind, "merge") else None
        if merged is not None:
            return [merged]
    return list(factors)


def sum_of_squares(factors: Sequence) -> torch.Tensor:
    """``sum_n (sum_c G_n^c)^2`` over the calls c that produced ``factors``; shape of the parameter."""
    if not factors:
        raise ValueError("sum_of_squares needs at least one factor")
    n = {int(f.n) for f in factors}
    if len(n) != 1:
        raise ValueError(f"the calls' factors disagree on the sample count: {sorted(n)}")
    factors = _merge(factors)
    if len(factors) == 1:
        f = factors[0]
        return f.square_sum(current_impl()) if hasattr(f, "square_sum") else chunked_square_sum(factors)
    return chunked_square_sum(factors)


def sum_of_squares_group(factors: Dict[str, Sequence]) -> Dict[str, torch.Tensor]:
    """:func:`sum_of_squares` for several parameters.

    Single factors that share one ``source`` (one torch.func computation for several
    parameters of a fallback module) are walked chunk by chunk together, so each
    chunk is computed once for all of them; everything else goes one parameter at a time.
    """
    out: Dict[str, torch.Tensor] = {}
    groups: Dict[int, Dict[str, object]] = {}
    for name, fs in factors.items():
        source = getattr(fs[0], "source", None) if len(fs) == 1 else None
        if source is None:
            out[name] = sum_of_squares(fs)
        else:
            groups.setdefault(id(source), {})[name] = fs[0]
    for single in groups.values():
        first = next(iter(single.values()))
        total = sum(_numel(f.shape) for f in single.values())
        step = chunk_size(2 * total, square_dtype(first.dtype))
        for start in range(0, first.n, step):
            stop = min(first.n, start + step)
            for name, f in single.items():
                part = widen(f.per_sample(start, stop)).square().sum(dim=0)
                out[name] = part if name not in out else out[name].add_(part)
    return out
