"""LayerNorm over the channels of an NCHW tensor (torchvision's and timm's ``LayerNorm2d``) and
timm's ``LayerNorm`` (an ``nn.LayerNorm`` whose ``forward`` is overridden for its fast-norm switch).

``y = x_hat * weight + bias`` with ``x_hat`` normalized over channels at each position, so
per sample ``G_weight = sum over (h, w) of b * x_hat`` and ``G_bias = sum of b`` (b the output
gradient, channels on dim 1).
"""
from __future__ import annotations

import sys

import torch.nn.functional as F

from ..registry import Call, register_lazy_rule
from .norm import _affine


def _apex_in_use(module) -> bool:
    """timm's fast-norm switch with apex installed: apex's fused kernel, not F.layer_norm."""
    fast = sys.modules.get("timm.layers.fast_norm")
    return bool(getattr(module, "_fast_norm", False)) and bool(getattr(fast, "has_apex", False))


@register_lazy_rule("torchvision.models.convnext.LayerNorm2d", "timm.layers.norm.LayerNorm2d")
def layer_norm_2d(module, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() != 4 or len(module.normalized_shape) != 1 or _apex_in_use(module):
        return None
    x_hat = F.layer_norm(x.permute(0, 2, 3, 1), module.normalized_shape, None, None, module.eps)
    return _affine(module, x_hat.permute(0, 3, 1, 2), g, 1)


@register_lazy_rule("timm.layers.norm.LayerNorm")
def timm_layer_norm(module, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() <= len(module.normalized_shape) or _apex_in_use(module):
        return None
    x_hat = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
    return _affine(module, x_hat, g, -1)

