"""Elementwise scales: timm's ``LayerScale`` (``x * gamma``, channels last) and ``LayerScale2d``
(``x * gamma.view(1, -1, 1, 1)``, NCHW). Per sample ``G_gamma = sum over positions of b * x``.

(An in-place ``LayerScale`` overwrites its input; the backend refuses it with a message saying so.)
"""
from __future__ import annotations

from ..factors import PerSample, wide_sum, widen
from ..registry import Call, register_lazy_rule


@register_lazy_rule("timm.layers.layer_scale.LayerScale")
def layer_scale(module, call: Call):
    x, g = call.args[0], call.grad
    d = module.gamma.shape[0]
    if x.dim() < 2 or x.shape[-1] != d or module.gamma.dim() != 1:
        return None
    return {"gamma": PerSample(wide_sum((widen(g) * widen(x)).reshape(x.shape[0], -1, d), 1))}


@register_lazy_rule("timm.layers.layer_scale.LayerScale2d")
def layer_scale_2d(module, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() != 4 or module.gamma.dim() != 1:
        return None
    return {"gamma": PerSample(wide_sum(widen(g) * widen(x), (2, 3)))}

