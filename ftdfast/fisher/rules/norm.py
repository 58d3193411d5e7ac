"""Normalization layers with an affine part: ``y = x_hat * weight + bias``.

Per sample, ``G_weight = sum over positions of b * x_hat`` and ``G_bias = sum of b``,
where ``x_hat`` is recomputed from the captured input with the layer's own
normalization and no affine part. BatchNorm must use its running statistics
(eval mode); the API refuses a BatchNorm in training mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..factors import PerSample, widen
from ..registry import Call, register_rule


def _affine(module: nn.Module, x_hat: torch.Tensor, g: torch.Tensor, channel_dim: int):
    """Per-sample grads of weight/bias whose elements live along ``channel_dim`` (or the trailing dims).

    Formed in float32 for a 16-bit model (see :func:`ftdfast.fisher.factors.square_dtype`)."""
    n = g.shape[0]
    g, x_hat = widen(g), widen(x_hat)
    out = {}
    if channel_dim == -1:  # LayerNorm-style: parameters cover the trailing normalized dims
        shape = tuple(module.weight.shape) if module.weight is not None else tuple(module.bias.shape)
        to_ps = lambda t: t.reshape((n, -1) + shape).sum(dim=1)  # noqa: E731
    else:
        to_ps = lambda t: t.reshape(n, t.shape[1], -1).sum(dim=2)  # noqa: E731
    if getattr(module, "weight", None) is not None:
        out["weight"] = PerSample(to_ps(g * x_hat))
    if getattr(module, "bias", None) is not None:
        out["bias"] = PerSample(to_ps(g))
    return out


@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def batch_norm(module: nn.modules.batchnorm._BatchNorm, call: Call):
    x, g = call.args[0], call.grad
    if module.training or module.running_mean is None or x.dim() < 2:
        return None  # batch statistics mix samples: the API refuses this before we get here
    x_hat = F.batch_norm(x, module.running_mean, module.running_var, None, None, False, 0.0, module.eps)
    return _affine(module, x_hat, g, 1)


@register_rule(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def instance_norm(module: nn.modules.instancenorm._InstanceNorm, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() != module._get_no_batch_dim() + 1:
        return None
    use_input_stats = module.training or not module.track_running_stats
    rm, rv = (None, None) if use_input_stats else (module.running_mean, module.running_var)
    x_hat = F.instance_norm(x, rm, rv, None, None, use_input_stats, 0.0, module.eps)
    return _affine(module, x_hat, g, 1)


@register_rule(nn.GroupNorm)
def group_norm(module: nn.GroupNorm, call: Call):
    x, g = call.args[0], call.grad
    x_hat = F.group_norm(x, module.num_groups, None, None, module.eps)
    return _affine(module, x_hat, g, 1)


@register_rule(nn.LayerNorm)
def layer_norm(module: nn.LayerNorm, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() <= len(module.normalized_shape):
        return None
    x_hat = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
    return _affine(module, x_hat, g, -1)


if hasattr(nn, "RMSNorm"):
    @register_rule(nn.RMSNorm)
    def rms_norm(module: nn.RMSNorm, call: Call):
        x, g = call.args[0], call.grad
        if x.dim() <= len(module.normalized_shape):
            return None
        x_hat = F.rms_norm(x, module.normalized_shape, None, module.eps)
        return _affine(module, x_hat, g, -1)
