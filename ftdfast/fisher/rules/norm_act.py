"""timm's ``BatchNormAct2d``: eval-mode BatchNorm, then dropout (identity in eval) and an activation.

The output gradient arrives after the activation, so the rule recomputes ``bn(x)`` and
back-propagates the captured gradient through ``act(drop(.))`` once, which gives the gradient
``b`` at the BatchNorm's output; then, as for BatchNorm, ``G_weight = sum over positions of
b * x_hat`` and ``G_bias = sum of b``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Call, register_lazy_rule
from .norm import _affine


@register_lazy_rule("timm.layers.norm_act.BatchNormAct2d")
def batch_norm_act(module, call: Call):
    x, g = call.args[0], call.grad
    if module.training or module.running_mean is None or x.dim() != 4:
        return None
    x_hat = F.batch_norm(x, module.running_mean, module.running_var, None, None, False, 0.0, module.eps)
    w = module.weight.detach() if module.weight is not None else None
    b = module.bias.detach() if module.bias is not None else None
    with torch.enable_grad():
        bn = F.batch_norm(x.detach(), module.running_mean, module.running_var, w, b, False, 0.0,
                          module.eps).requires_grad_(True)
        # the clone takes an in-place activation (a leaf cannot)
        (g_bn,) = torch.autograd.grad(module.act(module.drop(bn.clone())), bn, g)
    return _affine(module, x_hat, g_bn, 1)

