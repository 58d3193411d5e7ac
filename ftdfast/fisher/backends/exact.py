"""The exact path: per-sample gradients of chosen parameters straight from the batch's autograd graph.

For parameters whose per-layer rule does not apply to a call (the module ran
without the batch's samples on its batch dimension: a position table evaluated once
and broadcast, a batch folded with another dimension) or whose torch.func fallback
does not add up (a module reading a cached parameter-derived tensor), the per-sample
gradient of sample n for output gradient v is

    G_n = d <z, v * e_n> / d theta        (v * e_n: v with every sample but n zeroed)

a vector-Jacobian product of the model output z through the graph the batch
already built. Chunks of samples go through one batched backward
(``torch.autograd.grad(..., is_grads_batched=True)``, a vmap over the backward),
sized so that the chunk's gradient buffers fit ``FTDFAST_WORKSPACE_MB``; where vmap
has no batching rule for an op of the graph, one backward per sample. Each costs up
to one backward of the batch per sample (the price of exactness where the sample
dimension is not visible at the layer).
"""
from __future__ import annotations

import warnings
from typing import Dict

import torch

from ...workspace import workspace_elements
from ..factors import square_dtype, widen


def _masked(v: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(stop - start, *v.shape): lane c holds v with every sample but start + c zeroed."""
    lanes = v.new_zeros((stop - start,) + tuple(v.shape))
    idx = torch.arange(stop - start, device=v.device)
    lanes[idx, idx + start] = v[start:stop]
    return lanes


def exact_square_sums(out: torch.Tensor, v: torch.Tensor, params: Dict[str, torch.Tensor],
                      graph_elements: int) -> Dict[str, torch.Tensor]:
    """``sum_n G_n * G_n`` per parameter, ``G_n = d <out_n, v_n> / d p`` through ``out``'s graph (kept).

    Args:
        out: the model output (n, *out), its graph retained.
        v: output gradients, shaped like ``out``.
        params: name -> parameter (leaf tensors in ``out``'s graph).
        graph_elements: about how many elements one backward of the batch holds at once
            (the batch's hooked activations); sets how many samples share a batched backward.
    """
    names = list(params)
    tensors = [params[k] for k in names]
    n = out.shape[0]
    per_lane = max(1, graph_elements + v.numel() + sum(p.numel() for p in tensors))
    step = max(1, min(n, workspace_elements(out.dtype) // per_lane))
    acc: Dict[str, torch.Tensor] = {}

    def add(grads, lanes: bool):
        for k, g in zip(names, grads):
            if g is None:
                continue
            g = widen(g)
            s = g.square().sum(dim=0) if lanes else g.square()
            acc[k] = s if k not in acc else acc[k].add_(s)

    batched = step > 1
    for start in range(0, n, step):
        stop = min(n, start + step)
        if batched:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # vmap's "falling back to a slow path" notes
                    grads = torch.autograd.grad(out, tensors, _masked(v, start, stop), retain_graph=True,
                                                allow_unused=True, is_grads_batched=True)
                add(grads, lanes=True)
                continue
            except (RuntimeError, NotImplementedError):
                batched = False  # an op of the graph without a batching rule: one backward per sample
        for k in range(start, stop):
            grads = torch.autograd.grad(out, tensors, _masked(v, k, k + 1)[0], retain_graph=True,
                                        allow_unused=True)
            add(grads, lanes=False)
    return {k: acc[k] if k in acc else params[k].new_zeros(params[k].shape, dtype=square_dtype(params[k].dtype))
            for k in names}
