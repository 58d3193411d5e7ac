"""The quantity of the empirical Fisher: ``S = sum_n G_n * G_n`` from factored per-sample gradients.

:func:`sum_of_squares` takes the factors one parameter received from every call
that used it in a forward pass (usually one), adds the calls' per-sample gradients
and returns the sum over samples of their elementwise squares, shaped like the
parameter, in the factors' dtype. No tensor of shape (N, *param_shape) is built:
closed forms where they exist, otherwise chunks bounded by ``FTDFAST_WORKSPACE_MB``.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Dict, Iterator, List, Sequence

import torch

from .. import ops
from ..reference import sq_grad_sum_linear_ref
from .conv_methods import conv_sum_of_squares
from ..workspace import chunk_size
from .factors import ConvWeight, Outer, PerSample, Scatter, Stacked


_IMPL = contextvars.ContextVar("ftdfast_squares_impl", default="auto")


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
    """Within the block, closed forms use ``"ref"`` (pure PyTorch) or ``"auto"`` (native ops where built)."""
    if impl not in ("auto", "ref"):
        raise ValueError(f"impl must be 'auto' or 'ref', got {impl!r}")
    token = _IMPL.set(impl)
    try:
        yield
    finally:
        _IMPL.reset(token)


def _linear_op():
    """The Linear square-sum (a (n, t, i), b (n, t, o)) -> (o, i) for the current implementation choice."""
    return sq_grad_sum_linear_ref if _IMPL.get() == "ref" else ops.sq_grad_sum_linear


def _outer(f: Outer) -> torch.Tensor:
    return _linear_op()(f.a, f.b).reshape(f.shape)  # (o, i) -> the parameter's shape


def _per_sample(f: PerSample) -> torch.Tensor:
    return f.g.square().sum(dim=0)


def _conv(f: ConvWeight) -> torch.Tensor:
    return conv_sum_of_squares(f, _linear_op(), _IMPL.get())


def _scatter(f: Scatter) -> torch.Tensor:
    sums, ids = f.unique_rows()
    out = sums.new_zeros(f.shape)
    out.index_add_(0, ids, sums.square_())
    return out


def _stacked(f: Stacked) -> torch.Tensor:
    return torch.cat([sum_of_squares([p]) for p in f.parts], dim=0)


_SINGLE = {Outer: _outer, PerSample: _per_sample, ConvWeight: _conv, Scatter: _scatter, Stacked: _stacked}


def _merge(factors: Sequence) -> List:
    """Merge calls whose per-sample gradients add up in closed form (same-kind factors over positions)."""
    if len(factors) == 1:
        return list(factors)
    if all(isinstance(f, Outer) for f in factors) and len({f.a.shape[2] for f in factors}) == 1:
        return [Outer(torch.cat([f.a for f in factors], dim=1), torch.cat([f.b for f in factors], dim=1),
                      factors[0].shape)]
    if all(isinstance(f, PerSample) for f in factors):
        total = factors[0].g
        for f in factors[1:]:
            total = total + f.g
        return [PerSample(total)]
    if all(isinstance(f, Scatter) for f in factors):
        return [Scatter(torch.cat([f.ids for f in factors], dim=1), torch.cat([f.b for f in factors], dim=1),
                        factors[0].shape)]
    return list(factors)


def sum_of_squares(factors: Sequence) -> torch.Tensor:
    """``sum_n (sum_c G_n^c)^2`` over the calls c that produced ``factors``; shape of the parameter."""
    if not factors:
        raise ValueError("sum_of_squares needs at least one factor")
    factors = _merge(factors)
    if len(factors) == 1:
        return _SINGLE[type(factors[0])](factors[0])
    n = factors[0].n
    shape = tuple(factors[0].shape)
    acc = None
    step = chunk_size(2 * torch.Size(shape).numel(), _dtype(factors[0]))
    for start in range(0, n, step):
        stop = min(n, start + step)
        g = factors[0].per_sample(start, stop)
        for f in factors[1:]:
            g = g + f.per_sample(start, stop).reshape(g.shape)
        part = g.square_().sum(dim=0)
        acc = part if acc is None else acc.add_(part)
    return acc.reshape(shape)


def sum_of_squares_group(factors: Dict[str, Sequence]) -> Dict[str, torch.Tensor]:
    """:func:`sum_of_squares` for several parameters of one module.

    Parameters whose per-sample gradients come from one shared computation (the
    torch.func fallback) are walked chunk by chunk together, so each chunk is
    computed once for all of them.
    """
    sources = {id(fs[0].source) for fs in factors.values() if len(fs) == 1 and hasattr(fs[0], "source")}
    if len(sources) != 1 or any(len(fs) != 1 or not hasattr(fs[0], "source") for fs in factors.values()):
        return {name: sum_of_squares(fs) for name, fs in factors.items()}
    single = {name: fs[0] for name, fs in factors.items()}
    first = next(iter(single.values()))
    total = sum(int(torch.Size(f.shape).numel()) for f in single.values())
    step = chunk_size(2 * total, first.dtype)
    acc: Dict[str, torch.Tensor] = {}
    for start in range(0, first.n, step):
        stop = min(first.n, start + step)
        for name, f in single.items():
            part = f.per_sample(start, stop).square().sum(dim=0)
            acc[name] = part if name not in acc else acc[name].add_(part)
    return acc


def _dtype(f) -> torch.dtype:
    if isinstance(getattr(f, "dtype", None), torch.dtype):
        return f.dtype
    for name in ("g", "b", "gy", "a"):
        t = getattr(f, name, None)
        if isinstance(t, torch.Tensor):
            return t.dtype
    raise TypeError(f"unknown factor {type(f).__name__}")
