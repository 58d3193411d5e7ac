"""The maths of per-sample parameter gradients, layer by layer, kept apart from what is computed from them.

A Fisher rule describes a parameter's per-sample gradient ``G_n`` as a *factor*: an
object that knows the sample count ``n``, the parameter's ``shape`` and ``dtype``,
and can produce ``G_n`` for a range of samples (``per_sample(start, stop)``, shape
(stop - start, *shape)). A factor may also offer:

- ``square_sum(impl)``: ``sum_n G_n * G_n`` in closed form (default: chunks of
  ``per_sample`` bounded by ``FTDFAST_WORKSPACE_MB``);
- ``merge(factors)`` (a classmethod): one factor for the sum over calls of several
  same-kind factors (a module called twice), or ``None`` where there is no closed form;
- ``source``: an object shared by factors computed together (the torch.func fallback),
  so that :mod:`ftdfast.fisher.squares` walks their chunks once for all of them.

Any class following :class:`SampleFactor` is a factor; :mod:`ftdfast.fisher.squares`
dispatches on these methods only, never on the class. No tensor of shape
(N, *param_shape) is built where a closed form exists.

Precision: per-sample gradients, their squares and their sums over samples are formed
in :func:`square_dtype` of the factors' dtype: float32 for a float16/bfloat16 model
(a square below 6e-8 is 0 in float16, and a bfloat16 sum of many squares keeps 3
digits), the model's own dtype otherwise. :func:`widen` upcasts a 16-bit tensor and
returns any other as it is (no copy), so float32 and float64 models run unchanged.

Index letters: n sample, t position, i layer input feature, o output feature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import torch

from ..workspace import chunk_size


_WIDER = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def square_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype squares and per-batch sums of a ``dtype`` model are formed in: float32 for 16-bit floats."""
    return _WIDER.get(dtype, dtype)


def widen(t: torch.Tensor) -> torch.Tensor:
    """``t`` in :func:`square_dtype` of its dtype: a float32 copy of a 16-bit tensor, else ``t`` itself."""
    wide = _WIDER.get(t.dtype)
    return t if wide is None else t.to(wide)


def wide_sum(t: torch.Tensor, dim) -> torch.Tensor:
    """``t.sum(dim)`` accumulated and returned in :func:`square_dtype` (no upcast copy of ``t``)."""
    return t.sum(dim=dim, dtype=square_dtype(t.dtype))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def chunked_square_sum(factors: Sequence) -> torch.Tensor:
    """``sum_n (sum_c G_n^c)^2`` of factors with the same n and shape, from ``per_sample`` blocks that fit
    the workspace; in :func:`square_dtype`."""
    first = factors[0]
    shape = tuple(first.shape)
    acc = None
    step = chunk_size(2 * _numel(shape), square_dtype(first.dtype))
    for start in range(0, first.n, step):
        stop = min(first.n, start + step)
        g = widen(first.per_sample(start, stop))
        for f in factors[1:]:
            g = g + widen(f.per_sample(start, stop)).reshape(g.shape)
        part = g.square().sum(dim=0)
        acc = part if acc is None else acc.add_(part)
    return acc.reshape(shape)


class SampleFactor:
    """The factor protocol, with generic defaults. Subclasses set ``n``, ``shape``, ``dtype`` and ``per_sample``."""

    source: Any = None  # a shared computation behind several factors (see module docstring)

    n: int
    shape: Tuple[int, ...]
    dtype: torch.dtype

    def per_sample(self, start: int, stop: int) -> torch.Tensor:  # pragma: no cover - interface
        """``G_n`` for n in start:stop, shape (stop - start, *shape); ``dtype`` or :func:`square_dtype` of it."""
        raise NotImplementedError

    def square_sum(self, impl) -> torch.Tensor:
        """``sum_n G_n * G_n``, shape ``shape``, dtype :func:`square_dtype` of ``dtype``.

        ``impl``: the closed-form implementation (see squares.Impl)."""
        return chunked_square_sum([self])

    @classmethod
    def merge(cls, factors: Sequence["SampleFactor"]) -> Optional["SampleFactor"]:
        """One factor whose ``G_n`` is the sum of the factors' (all of this class), or None."""
        return None


@dataclass
class Outer(SampleFactor):
    """``G_n = b_n^T a_n`` reshaped to ``shape``: a Linear-type weight.

    a: (n, t, i) layer inputs, b: (n, t, o) output gradients; ``prod(shape) == o * i``.
    """

    a: torch.Tensor
    b: torch.Tensor
    shape: Tuple[int, ...]

    @property
    def n(self) -> int:
        return self.a.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.a.dtype

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        g = torch.bmm(widen(self.b[start:stop]).transpose(1, 2), widen(self.a[start:stop]))
        return g.reshape((stop - start,) + tuple(self.shape))

    def square_sum(self, impl) -> torch.Tensor:
        return impl.linear(widen(self.a), widen(self.b)).reshape(self.shape)  # (o, i) -> the parameter's shape

    @classmethod
    def merge(cls, factors):
        """Calls with the same input width add up as more positions: concatenate along t."""
        if len({f.a.shape[2] for f in factors}) != 1:
            return None
        return cls(torch.cat([f.a for f in factors], dim=1), torch.cat([f.b for f in factors], dim=1),
                   factors[0].shape)


@dataclass
class PerSample(SampleFactor):
    """Per-sample gradients given explicitly: g is (n, *shape). For small parameters (biases, norms)."""

    g: torch.Tensor

    @property
    def n(self) -> int:
        return self.g.shape[0]

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.g.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return self.g.dtype

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        return self.g[start:stop]

    def square_sum(self, impl) -> torch.Tensor:
        return widen(self.g).square().sum(dim=0)

    @classmethod
    def merge(cls, factors):
        total = widen(factors[0].g)
        for f in factors[1:]:
            total = total + widen(f.g).reshape(total.shape)
        return cls(total)


@dataclass
class Scatter(SampleFactor):
    """An embedding table: ``G_n[v] = sum over t with ids[n, t] == v of b[n, t]``.

    ids: (n, t) integer token ids, b: (n, t, d) output gradients, shape (num_embeddings, d).
    Repeated ids within a sample are summed before any square is taken.
    """

    ids: torch.Tensor
    b: torch.Tensor
    shape: Tuple[int, ...]

    @property
    def n(self) -> int:
        return self.ids.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.b.dtype

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        nc = stop - start
        ids, b = self.ids[start:stop], widen(self.b[start:stop])
        out = b.new_zeros((nc,) + tuple(self.shape))
        rows = torch.arange(nc, device=ids.device).unsqueeze(1).expand_as(ids)
        flat = out.view(nc * self.shape[0], self.shape[1])
        flat.index_add_(0, (rows * self.shape[0] + ids).reshape(-1), b.reshape(-1, self.shape[1]))
        return out

    def unique_rows(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-(sample, id) summed rows (U, d) and their ids (U,), without a (n, V, d) tensor."""
        n, t = self.ids.shape
        keys = torch.arange(n, device=self.ids.device).unsqueeze(1) * self.shape[0] + self.ids
        uniq, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
        b = widen(self.b)
        sums = b.new_zeros((uniq.numel(), self.shape[1]))
        sums.index_add_(0, inverse, b.reshape(n * t, self.shape[1]))
        return sums, uniq % self.shape[0]

    def square_sum(self, impl) -> torch.Tensor:
        sums, ids = self.unique_rows()
        out = sums.new_zeros(self.shape)
        out.index_add_(0, ids, sums.square_())
        return out

    @classmethod
    def merge(cls, factors):
        return cls(torch.cat([f.ids for f in factors], dim=1), torch.cat([f.b for f in factors], dim=1),
                   factors[0].shape)


@dataclass
class Stacked(SampleFactor):
    """Per-sample gradients stacked along the parameter's first dimension from parts (any factors).

    Used where one parameter holds several projections with different inputs
    (``in_proj_weight`` of cross-attention: query, key and value rows).
    """

    parts: Tuple

    @property
    def n(self) -> int:
        return self.parts[0].n

    @property
    def shape(self) -> Tuple[int, ...]:
        first = tuple(self.parts[0].shape)
        return (sum(tuple(p.shape)[0] for p in self.parts),) + first[1:]

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        return torch.cat([p.per_sample(start, stop) for p in self.parts], dim=1)

    def square_sum(self, impl) -> torch.Tensor:
        return torch.cat([p.square_sum(impl) for p in self.parts], dim=0)
