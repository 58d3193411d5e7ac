"""Per-sample gradients of raw parameters from the operations that use them, without the module's fallback.

A module without a rule may own parameters that its forward uses directly (ViT's
``cls_token.expand(N, -1, -1)`` and ``x + pos_embed``, a scale ``gamma * x``), while
its children have rules. The torch.func fallback would run the whole module under
vmap for them. Instead, each use of such a parameter p is found in the autograd
graph: an ``expand``, ``add``, ``sub`` or ``mul`` node whose output y has the N samples
on dimension 0 and into which p is broadcast over that dimension (p right-aligned,
of size 1 there). With ``G = d <z, v> / d y`` from the batch's backward (the node's
output is one more root of it), sample n's gradient is ``G[n]`` (times the other
factor of a ``mul``) summed over the dimensions p is broadcast along. A module
whose parameters have any other use stays on the fallback.

The rules backend tries this on the first batch beside the fallback, and uses it
from then on only where the two agree (:class:`ftdfast.fisher.backends.hooks.RulesBackend`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from ..factors import widen

SUPPORTED = ("ExpandBackward0", "AddBackward0", "SubBackward0", "MulBackward0")

Use = Tuple[object, int]  # (autograd node that consumes the parameter, which of its inputs it is)


def find_uses(root, params: Dict[str, torch.Tensor]) -> Dict[str, List[Use]]:
    """For each parameter, the graph nodes under ``root`` that take it as an input (directly)."""
    by_id = {id(p): name for name, p in params.items()}
    uses: Dict[str, List[Use]] = {name: [] for name in params}
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for i, (child, _) in enumerate(node.next_functions):
            if child is None:
                continue
            var = getattr(child, "variable", None)
            if var is not None and id(var) in by_id:
                uses[by_id[id(var)]].append((node, i))
            elif child not in seen:
                stack.append(child)
    return uses


def supported(uses: List[Use]) -> bool:
    return bool(uses) and all(type(node).__name__ in SUPPORTED for node, _ in uses)


def per_sample(node, index: int, grad: torch.Tensor, p: torch.Tensor, n: int) -> Optional[torch.Tensor]:
    """(n, *p.shape): sample n's gradient of p through this use, or None where the layout does not fit.

    In :func:`ftdfast.fisher.factors.square_dtype` of the model's dtype."""
    if grad is None or grad.dim() == 0 or grad.shape[0] != n or p.dim() > grad.dim():
        return None
    full = (1,) * (grad.dim() - p.dim()) + tuple(p.shape)
    if full[0] != 1 or any(f not in (1, s) for f, s in zip(full, grad.shape)):
        return None
    kind = type(node).__name__
    grad = widen(grad)  # float32 for a 16-bit model (see factors.square_dtype)
    if kind == "AddBackward0":
        g = grad if index == 0 else grad * node._saved_alpha
    elif kind == "SubBackward0":
        g = grad if index == 0 else grad * (-node._saved_alpha)
    elif kind == "MulBackward0":
        other = node._saved_other if index == 0 else node._saved_self
        if not isinstance(other, torch.Tensor):
            return None
        g = grad * widen(other)
        if tuple(g.shape) != tuple(grad.shape):
            return None
    elif kind == "ExpandBackward0":
        g = grad
    else:
        return None
    dims = tuple(d for d in range(1, g.dim()) if full[d] == 1 and g.shape[d] != 1)
    if dims:
        g = g.sum(dim=dims, keepdim=True)
    return g.reshape((n,) + tuple(p.shape))
