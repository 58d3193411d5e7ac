"""The maths of per-sample parameter gradients, layer by layer, kept apart from what is computed from them.

A Fisher rule describes a parameter's per-sample gradient ``G_n`` as one of these
factored forms, built from the layer's captured input and output gradient. The
quantities (the sum of squares in :mod:`ftdfast.fisher.squares`) are computed from
the factors without materializing ``G_n`` for all samples at once.

Index letters: n sample, t position, i layer input feature, o output feature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch


@dataclass
class Outer:
    """``G_n = b_n^T a_n`` reshaped to ``shape``: a Linear-type weight.

    a: (n, t, i) layer inputs, b: (n, t, o) output gradients; ``prod(shape) == o * i``.
    """

    a: torch.Tensor
    b: torch.Tensor
    shape: Tuple[int, ...]

    @property
    def n(self) -> int:
        return self.a.shape[0]

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        g = torch.bmm(self.b[start:stop].transpose(1, 2), self.a[start:stop])
        return g.reshape((stop - start,) + tuple(self.shape))


@dataclass
class PerSample:
    """Per-sample gradients given explicitly: g is (n, *shape). For small parameters (biases, norms)."""

    g: torch.Tensor

    @property
    def n(self) -> int:
        return self.g.shape[0]

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.g.shape[1:])

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        return self.g[start:stop]


@dataclass
class ConvWeight:
    """The weight of a (transposed) convolution: ``G_n`` is the weight gradient of sample n alone.

    x: (n, C_in, *spatial) input, gy: (n, C_out, *spatial_out) output gradient.
    """

    x: torch.Tensor
    gy: torch.Tensor
    shape: Tuple[int, ...]
    stride: Sequence[int]
    padding: Sequence[int]
    dilation: Sequence[int]
    groups: int
    transposed: bool = False
    output_padding: Sequence[int] = ()

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def positions(self) -> int:
        """Output positions t per sample (H_out * W_out for a Conv2d)."""
        t = 1
        for s in self.gy.shape[2:]:
            t *= s
        return t

    def _backward_weight(self, gy: torch.Tensor, x: torch.Tensor, weight_shape, groups: int) -> torch.Tensor:
        dummy = torch.empty(weight_shape, dtype=x.dtype, device=x.device)
        out_pad = list(self.output_padding) if self.transposed else [0] * len(self.stride)
        return torch.ops.aten.convolution_backward(
            gy, x, dummy, None, list(self.stride), list(self.padding), list(self.dilation),
            self.transposed, out_pad, groups, [False, True, False])[1]

    def one_sample(self, k: int) -> torch.Tensor:
        """``G_k``, shape ``self.shape``: one weight-only convolution backward."""
        return self._backward_weight(self.gy[k:k + 1], self.x[k:k + 1], self.shape, self.groups)

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        """``G_n`` for n in start:stop, as one grouped convolution (samples become groups)."""
        nc = stop - start
        x = self.x[start:stop].reshape((1, -1) + tuple(self.x.shape[2:]))
        gy = self.gy[start:stop].reshape((1, -1) + tuple(self.gy.shape[2:]))
        shape = (nc * self.shape[0],) + tuple(self.shape[1:])
        g = self._backward_weight(gy, x, shape, self.groups * nc)
        return g.reshape((nc,) + tuple(self.shape))


@dataclass
class Scatter:
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

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        nc = stop - start
        ids, b = self.ids[start:stop], self.b[start:stop]
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
        sums = self.b.new_zeros((uniq.numel(), self.shape[1]))
        sums.index_add_(0, inverse, self.b.reshape(n * t, self.shape[1]))
        return sums, uniq % self.shape[0]


@dataclass
class Stacked:
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

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        return torch.cat([p.per_sample(start, stop) for p in self.parts], dim=1)


Factor = (Outer, PerSample, ConvWeight, Scatter, Stacked)
