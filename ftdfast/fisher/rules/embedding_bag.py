"""nn.EmbeddingBag, every mode: a bag's output is a (weighted) sum, mean or max of its rows.

With ``c_j`` the coefficient of the j-th id of a bag (its ``per_sample_weights`` entry in
``"sum"`` mode, ``1 / bag size`` in ``"mean"`` mode, 0 for ``padding_idx``), the bag's
gradient is ``G[v] = sum over j with id_j == v of c_j b`` (b the bag's output gradient); in
``"max"`` mode each output feature k takes the row of its arg-max id. This is a
:class:`~ftdfast.fisher.factors.Scatter` with one row per (bag, id) and repeated ids summed
before the square.

A bag is one sample: a 2-D input (B, L) has one bag per row; with a 1-D input and
``offsets`` the bags are the rows of the output. ``max_norm`` (renormalises the table in the
forward) is left to the fallback; ``scale_grad_by_freq`` (batch frequencies: no per-sample gradient)
is refused by ``fisher_diagonal`` before any rule runs.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..factors import Scatter, widen
from ..registry import Call, register_rule

_SIGNATURE = inspect.signature(nn.EmbeddingBag.forward)


def _bags(ids: torch.Tensor, offsets, include_last: bool):
    """(B, L) ids and a (B, L) validity mask from a 1-D input with offsets (bags padded on the right)."""
    total = ids.shape[0]
    starts = offsets[:-1] if include_last else offsets
    ends = torch.cat([offsets[1:], offsets.new_tensor([total])]) if not include_last else offsets[1:]
    ends = ends.clamp(max=total)
    sizes = (ends - starts).clamp(min=0)
    length = int(sizes.max()) if sizes.numel() else 0
    j = torch.arange(max(length, 1), device=ids.device)
    valid = j.unsqueeze(0) < sizes.unsqueeze(1)
    pos = (starts.unsqueeze(1) + j).clamp(max=max(total - 1, 0))
    grid = ids[pos] if total else ids.new_zeros(pos.shape)
    return torch.where(valid, grid, torch.zeros_like(grid)), valid


@register_rule(nn.EmbeddingBag)
def embedding_bag(module: nn.EmbeddingBag, call: Call):
    if module.max_norm is not None:
        return None
    a = _SIGNATURE.bind(module, *call.args, **call.kwargs).arguments
    ids, offsets, psw = a["input"], a.get("offsets"), a.get("per_sample_weights")
    g = call.grad  # (B, d)
    if ids.dim() == 2:
        valid = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        weights = psw
    elif ids.dim() == 1 and offsets is not None:
        ids, valid = _bags(ids, offsets, module.include_last_offset)
        weights = None
        if psw is not None:
            weights = torch.zeros(ids.shape, dtype=psw.dtype, device=psw.device)
            weights[valid] = psw
    else:
        return None
    if module.padding_idx is not None:
        valid = valid & (ids != module.padding_idx)
    if ids.shape[0] != g.shape[0]:
        return None
    g = widen(g)  # coefficients and rows in float32 for a 16-bit model (factors.square_dtype)
    coef = valid.to(g.dtype)
    if weights is not None:
        coef = coef * weights.to(g.dtype)
    if module.mode == "mean":
        coef = coef / valid.sum(dim=1, keepdim=True).clamp(min=1).to(g.dtype)
    if module.mode in ("sum", "mean"):
        b = coef.unsqueeze(-1) * g.unsqueeze(1)  # (B, L, d)
    else:  # max: feature k of a bag comes from its arg-max row among the valid ids
        rows = F.embedding(ids, module.weight.detach())  # (B, L, d)
        rows = rows.masked_fill(~valid.unsqueeze(-1), float("-inf"))
        winner = F.one_hot(rows.argmax(dim=1), ids.shape[1]).transpose(1, 2)  # (B, L, d)
        winner = winner & valid.unsqueeze(-1)
        b = winner.to(g.dtype) * g.unsqueeze(1)
    return {"weight": Scatter(ids, b, tuple(module.weight.shape))}
