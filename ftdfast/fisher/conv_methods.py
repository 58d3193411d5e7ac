"""Three exact ways to get ``sum_n G_n * G_n`` for a convolution weight, and the choice among them.

- ``grouped``: samples become groups of one convolution backward (chunks of samples);
  fast when channels are few and positions many.
- ``per_sample``: one weight-only convolution backward per sample, squared into an
  accumulator; fast when the weight is large and positions few.
- ``unfold``: the input unfolded (im2col) per chunk of samples, then the Linear
  square-sum over positions (the native fused op when built); convolutions with
  groups == 1, 1-D and 2-D, not transposed.

Which is fastest depends on the shapes and the machine, so each distinct layer
configuration is timed once on a few samples and the winner is cached for the
process (like cuDNN's benchmark mode). ``FTDFAST_CONV_METHOD`` forces one.
All three compute the same quantity; only the rounding order differs.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from .factors import ConvWeight, chunk_size, workspace_elements

_PROBE_SAMPLES = 16
_CHOICE: Dict[tuple, str] = {}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


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


def unfold(f: ConvWeight, outer: Callable) -> torch.Tensor:
    dims = len(f.shape) - 2
    x, gy = f.x, f.gy
    kernel, stride, padding, dilation = tuple(f.shape[2:]), tuple(f.stride), tuple(f.padding), tuple(f.dilation)
    if dims == 1:
        x, gy = x.unsqueeze(2), gy.unsqueeze(2)
        kernel, stride, padding, dilation = (1,) + kernel, (1,) + stride, (0,) + padding, (1,) + dilation
    features = _numel(f.shape[1:])
    positions = _numel(gy.shape[2:])
    step = max(1, workspace_elements(x.dtype) // max(1, features * positions))
    acc = None
    for start in range(0, f.n, step):
        stop = min(f.n, start + step)
        a = F.unfold(x[start:stop], kernel, dilation=dilation, padding=padding, stride=stride)  # (n, i, t)
        b = gy[start:stop].flatten(2)  # (n, o, t)
        part = outer(a.transpose(1, 2), b.transpose(1, 2))  # (o, i)
        acc = part if acc is None else acc.add_(part)
    return acc.reshape(f.shape)


METHODS = {"grouped": grouped, "per_sample": per_sample, "unfold": unfold}


def applicable(f: ConvWeight) -> List[str]:
    names = ["grouped", "per_sample"]
    if not f.transposed and f.groups == 1 and len(f.shape) in (3, 4):
        names.append("unfold")
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
    names = applicable(f)
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
            _sync(f.x.device)
            t0 = time.perf_counter()
            METHODS[name](probe, outer)
            _sync(f.x.device)
            times[name] = time.perf_counter() - t0
        _CHOICE[key] = min(times, key=times.get)
    return _CHOICE[key]


def conv_sum_of_squares(f: ConvWeight, outer: Callable, impl: str) -> torch.Tensor:
    return METHODS[choose(f, outer, impl)](f, outer)
