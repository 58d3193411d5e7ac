"""transformers' ``Conv1D`` (GPT-2, GPT): a Linear map whose weight is stored transposed, (i, o).

``y = x @ W + bias``, so per sample ``G_W = sum_t a_t^T b_t`` (i, o): the Linear factor with the
roles of input and output gradient swapped.
"""
from __future__ import annotations

from ..factors import Outer, PerSample, wide_sum, widen
from ..registry import Call, register_lazy_rule


@register_lazy_rule("transformers.pytorch_utils.Conv1D")
def hf_conv1d(module, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() < 2:
        return None  # no sample dimension
    n, (i, o) = x.shape[0], module.weight.shape
    a = x.reshape(n, -1, i)
    b = g.reshape(n, -1, o)
    out = {"weight": Outer(b, a, (i, o))}  # bmm(a^T, b): (i, o), the weight's own layout
    if module.bias is not None:
        out["bias"] = PerSample(widen(b[:, 0]) if b.shape[1] == 1 else wide_sum(b, 1))
    return out

