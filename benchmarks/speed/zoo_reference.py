"""An independent float64 reference for the diagonal empirical Fisher (nothing from ftdfast).

One batched forward, then one ``torch.autograd.grad(loss_n, params, retain_graph=True)`` per
sample. Unlike a loop over batches of one, this runs every module on the whole batch, as the
fast path does (torch 2.14.1's CPU autograd gives a wrong BatchNorm2d eval bias gradient for a
batch of ONE with channels-last-strided incoming gradients).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F


def fisher_reference(model: nn.Module, inputs, y: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``{name: (1/N) sum_n (d loss_n / d theta)^2}`` for every trainable parameter (zeros if unused),
    with ``loss_n`` the cross-entropy of sample n's logits (n, C) and integer label."""
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    with torch.enable_grad():
        out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        losses = F.cross_entropy(out, y, reduction="none")
        acc = [torch.zeros_like(p) for p in params]
        for n in range(losses.shape[0]):
            grads = torch.autograd.grad(losses[n], params, retain_graph=True, allow_unused=True)
            for a, g in zip(acc, grads):
                if g is not None:
                    a.add_(g.square())
    return {k: a / losses.shape[0] for (k, _), a in zip(named, acc)}


def max_relative_errors(got, want) -> Dict[str, float]:
    """Per parameter: max |got - want| relative to the largest entry of ``want`` over all parameters."""
    scale = max(float(v.abs().max()) for v in want.values() if v.numel())
    scale = scale if scale > 0 else 1.0
    return {k: float((got[k].to(want[k].dtype) - want[k]).abs().max()) / scale if want[k].numel() else 0.0
            for k in want}
