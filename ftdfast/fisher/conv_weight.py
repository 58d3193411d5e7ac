"""The factor of a convolution weight, :class:`ConvWeight`, and the exact ways to get its ``sum_n G_n * G_n``.

- ``grouped``: samples become groups of one convolution backward (chunks of samples);
  fast when channels are few and positions many.
- ``per_sample``: one weight-only convolution backward per sample, squared into an
  accumulator; fast when the weight is large and positions few.
- ``unfold``: the input's patches (a strided view copied once per chunk of samples),
  then the Linear square-sum over positions (the native fused op when built);
  convolutions with groups == 1, not transposed.
- ``native``: the C++ op ``ftdfast::sq_grad_sum_conv`` (implicit im2col, per-sample
  GEMMs squared into output tiles); not transposed, only where it is built and
  the implementation is not forced to pure PyTorch (``backend="rules"``).

Which is fastest depends on the shapes and the machine, so each distinct layer
configuration is timed (best of a few runs on a few samples) and the winner is cached for the
process (like cuDNN's benchmark mode). ``FTDFAST_CONV_METHOD`` forces one.
All three compute the same quantity; only the rounding order differs.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..native import _ext, ops
from ..workspace import chunk_size, workspace_elements
from .factors import SampleFactor, _numel, square_dtype, widen

_PROBE_SAMPLES = 8
_PROBE_REPEATS = 3
_CHOICE: Dict[tuple, str] = {}


@dataclass
class ConvWeight(SampleFactor):
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
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def positions(self) -> int:
        """Output positions t per sample (H_out * W_out for a Conv2d)."""
        return _numel(self.gy.shape[2:])

    def _backward_weight(self, gy: torch.Tensor, x: torch.Tensor, weight_shape, groups: int) -> torch.Tensor:
        dummy = torch.empty(weight_shape, dtype=x.dtype, device=x.device)
        out_pad = list(self.output_padding) if self.transposed else [0] * len(self.stride)
        return torch.ops.aten.convolution_backward(
            gy, x, dummy, None, list(self.stride), list(self.padding), list(self.dilation),
            self.transposed, out_pad, groups, [False, True, False])[1]

    def one_sample(self, k: int) -> torch.Tensor:
        """``G_k``, shape ``self.shape``: one weight-only convolution backward."""
        return self._backward_weight(widen(self.gy[k:k + 1]), widen(self.x[k:k + 1]), self.shape, self.groups)

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        """``G_n`` for n in start:stop, as one grouped convolution (samples become groups)."""
        nc = stop - start
        x = widen(self.x[start:stop]).reshape((1, -1) + tuple(self.x.shape[2:]))
        gy = widen(self.gy[start:stop]).reshape((1, -1) + tuple(self.gy.shape[2:]))
        shape = (nc * self.shape[0],) + tuple(self.shape[1:])
        g = self._backward_weight(gy, x, shape, self.groups * nc)
        return g.reshape((nc,) + tuple(self.shape))

    def square_sum(self, impl) -> torch.Tensor:
        f = self if square_dtype(self.dtype) == self.dtype else replace(self, x=widen(self.x), gy=widen(self.gy))
        return METHODS[choose(f, impl.linear, impl.name)](f, impl.linear)


def grouped(f: ConvWeight, outer: Callable) -> torch.Tensor:
    acc = None
    step = chunk_size(_numel(f.shape), f.x.dtype)
    for start in range(0, f.n, step):
        part = f.per_sample(start, min(f.n, start + step)).square_().sum(dim=0)
        acc = part if acc is None else acc.add_(part)
    return acc


def per_sample(f: ConvWeight, outer: Callable) -> torch.Tensor:
    acc = torch.zeros(f.shape, dtype=f.x.dtype, device=f.x.device)
    for k in range(f.n):
        g = f.one_sample(k)
        acc.addcmul_(g, g)
    return acc


def patches(x: torch.Tensor, kernel, stride, padding, dilation) -> torch.Tensor:
    """Input patches as (n, t, i): t output positions, i = C * prod(kernel) in the weight's (C, k...) order.

    A strided view of the padded input, copied once into the layout the Linear
    square-sum reads; 1-D, 2-D and 3-D alike.
    """
    dims = len(kernel)
    if any(padding):
        pads = []
        for p in reversed(padding):
            pads += [p, p]
        x = F.pad(x, pads)
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    out = [(spatial[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in range(dims)]
    st = x.stride()
    view = x.as_strided(
        (n,) + tuple(out) + (c,) + tuple(kernel),
        (st[0],) + tuple(st[2 + d] * stride[d] for d in range(dims)) + (st[1],)
        + tuple(st[2 + d] * dilation[d] for d in range(dims)),
        x.storage_offset())
    return view.reshape(n, _numel(out), c * _numel(kernel))


def unfold(f: ConvWeight, outer: Callable) -> torch.Tensor:
    features = _numel(f.shape[1:])
    positions = _numel(f.gy.shape[2:])
    step = max(1, workspace_elements(f.x.dtype) // max(1, features * positions))
    acc = None
    for start in range(0, f.n, step):
        stop = min(f.n, start + step)
        a = patches(f.x[start:stop], tuple(f.shape[2:]), f.stride, f.padding, f.dilation)  # (n, t, i)
        b = f.gy[start:stop].flatten(2).transpose(1, 2)  # (n, t, o)
        part = outer(a, b)  # (o, i)
        acc = part if acc is None else acc.add_(part)
    return acc.reshape(f.shape)


def native(f: ConvWeight, outer: Callable) -> torch.Tensor:
    return ops.sq_grad_sum_conv(f.x, f.gy, f.shape, f.stride, f.padding, f.dilation, f.groups)


METHODS = {"grouped": grouped, "per_sample": per_sample, "unfold": unfold, "native": native}


def applicable(f: ConvWeight, impl: str = "auto") -> List[str]:
    names = ["grouped", "per_sample"]
    if not f.transposed and f.groups == 1:
        names.append("unfold")
    if impl == "auto" and not f.transposed and _ext.has_kernel("ftdfast::sq_grad_sum_conv", f.x.device):
        names.append("native")
    return names


def _key(f: ConvWeight, impl: str) -> tuple:
    return (f.x.device.type, f.x.dtype, tuple(f.x.shape[1:]), tuple(f.gy.shape[1:]), tuple(f.shape),
            tuple(f.stride), tuple(f.padding), tuple(f.dilation), f.groups, f.transposed, impl)


def _probe(f: ConvWeight) -> ConvWeight:
    m = min(f.n, _PROBE_SAMPLES)
    return ConvWeight(f.x[:m], f.gy[:m], f.shape, f.stride, f.padding, f.dilation, f.groups, f.transposed,
                      f.output_padding)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose(f: ConvWeight, outer: Callable, impl: str) -> str:
    """The method for this layer configuration: forced, cached, or timed now on a few samples."""
    names = applicable(f, impl)
    forced = os.environ.get("FTDFAST_CONV_METHOD")
    if forced:
        if forced not in METHODS:
            raise ValueError(f"FTDFAST_CONV_METHOD={forced!r} is not one of {sorted(METHODS)}")
        return forced if forced in names else names[0]
    key = _key(f, impl)
    if key not in _CHOICE:
        probe = _probe(f)
        times = {}
        for name in names:
            METHODS[name](probe, outer)  # warm-up
            best = float("inf")
            for _ in range(_PROBE_REPEATS):  # the best of a few: robust to a busy machine
                _sync(f.x.device)
                t0 = time.perf_counter()
                METHODS[name](probe, outer)
                _sync(f.x.device)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        _CHOICE[key] = min(times, key=times.get)
    return _CHOICE[key]
