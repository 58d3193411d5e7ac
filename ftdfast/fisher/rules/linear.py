"""nn.Linear (and nn.Bilinear-free affine maps): ``G_n = sum_t b_nt a_nt^T``.

With a 2-D input (t = 1) the square-sum is the single GEMM ``(b*b)^T (a*a)``; with
3-D or more inputs every leading non-batch dimension is a position t and the
exact per-sequence square ``sum_n (sum_t b_nt a_nt^T)^2`` is taken, never the
per-token one.
"""
from __future__ import annotations

import torch.nn as nn

from ..factors import Outer, PerSample, wide_sum, widen
from ..registry import Call, register_rule


@register_rule(nn.Linear)
def linear(module: nn.Linear, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() < 2:
        return None  # an unbatched input: no sample dimension
    n = x.shape[0]
    a = x.reshape(n, -1, module.in_features)
    b = g.reshape(n, -1, module.out_features)
    out = {"weight": Outer(a, b, tuple(module.weight.shape))}
    if module.bias is not None:
        out["bias"] = PerSample(widen(b[:, 0]) if b.shape[1] == 1 else wide_sum(b, 1))  # t == 1: no reduction pass
    return out
