"""Fisher pruning: per-entry saliency ``F_i theta_i^2 / 2``, masks at a sparsity, and applying them."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from ._names import align_names, check_fisher, parameters_of, tensors_of

SCOPES = ("global", "layer")


def fisher_saliency(model: Any, fisher: Mapping) -> Dict[str, torch.Tensor]:
    """``s_i = F_i * theta_i^2 / 2`` for every entry of every parameter in ``fisher``.

    The second-order estimate of the loss increase when theta_i alone is set to 0,
    with the Fisher diagonal in place of the Hessian's (Optimal Brain Damage with the
    Fisher; exact for a model at a minimum whose Hessian is its Fisher).

    Args:
        model: an ``nn.Module`` (possibly DDP/DataParallel-wrapped; frozen parameters
            included) or a state_dict.
        fisher: a :class:`~ftdfast.FisherDiagonal` or a mapping name -> tensor of the
            parameter's shape; its names may differ from the model's by one wrapper prefix
            (``module.``, ``hf.``, ...). Never recomputed.

    Returns:
        A dict name -> saliency, one per Fisher entry, each of its parameter's shape, on the
        parameter's device, in the promoted dtype of the Fisher and the parameter.
    """
    params = tensors_of(model, "model")
    fisher = align_names(tensors_of(fisher, "fisher"), params, "fisher", "the model")
    check_fisher(fisher, params, "fisher")
    out = {}
    for name, f in fisher.items():
        p = params[name].detach()
        dtype = torch.promote_types(f.dtype, p.dtype)
        t = p.to(dtype)
        out[name] = f.to(p.device, dtype) * t * t / 2
    return out


def _n_prune(sparsity: float, n: int) -> int:
    return min(n, int(math.floor(sparsity * n + 0.5)))


def _keep_largest(flat: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask of ``flat`` (n,) keeping the ``n_keep`` largest; among equal values the earlier are kept."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if n_keep > 0:
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:n_keep]] = True
    return mask


def prune_masks(scores: Any, sparsity: float, *, fisher: Optional[Mapping] = None,
                scope: str = "global") -> Dict[str, torch.Tensor]:
    """Bool masks (True = keep) that prune the ``sparsity`` fraction of entries with the smallest score.

    Args:
        scores: a mapping name -> scores (e.g. :func:`fisher_saliency`'s result; include only
            the tensors to prune, e.g. weights but not biases), or, with ``fisher``, a model or
            state_dict whose saliency ``fisher_saliency(scores, fisher)`` is the score.
        sparsity: the fraction in [0, 1] to prune: of all entries together (``scope="global"``)
            or of each tensor separately (``scope="layer"``). Exactly
            ``floor(sparsity * n + 1/2)`` of n entries are pruned: 0 gives all-True masks,
            1 all-False.
        fisher: the Fisher diagonal, when ``scores`` is a model.
        scope: ``"global"`` (one ranking over every tensor) or ``"layer"`` (per tensor).

    Ties: entries of equal score are ranked by position (tensor order, then flat index):
    the earlier one is kept, so the count is exact and the masks deterministic.

    Returns:
        A dict name -> bool tensor of the score's shape and device.
    """
    if fisher is not None:
        scores = fisher_saliency(scores, fisher)
    elif isinstance(scores, nn.Module):
        raise TypeError("prune_masks got a model without fisher=: pass fisher=F to score it by its Fisher "
                        "saliency, or pass a mapping name -> scores")
    scores = tensors_of(scores, "scores")
    if not (isinstance(sparsity, (int, float)) and 0 <= sparsity <= 1):
        raise ValueError(f"sparsity must be a fraction in [0, 1], got {sparsity!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} is not one of {SCOPES}")
    for name, s in scores.items():
        if s.dtype == torch.bool or s.is_complex():
            raise TypeError(f"scores[{name!r}] has dtype {s.dtype}; scores are real numbers")
        if s.is_floating_point() and not bool(torch.isfinite(s).all()):
            raise ValueError(f"scores[{name!r}] holds NaN or infinite values; scores must be finite")
    if scope == "layer":
        return {name: _keep_largest(s.reshape(-1), s.numel() - _n_prune(sparsity, s.numel())).view(s.shape)
                for name, s in scores.items()}
    if not scores:
        return {}
    device = next(iter(scores.values())).device
    flat = torch.cat([s.detach().reshape(-1).to(device, torch.float64) for s in scores.values()])
    keep = _keep_largest(flat, flat.numel() - _n_prune(sparsity, flat.numel()))
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start:start + s.numel()].view(s.shape).to(s.device)
        start += s.numel()
    return out


def apply_masks(model: nn.Module, masks: Mapping) -> nn.Module:
    """Zero the pruned entries (mask False) of the model's parameters in place; returns the model.

    A one-off: training afterwards revives pruned entries unless the masks are applied again
    (e.g. after every optimizer step). ``masks``' names may differ from the model's by one wrapper prefix.
    """
    params = parameters_of(model)
    masks = align_names(tensors_of(masks, "masks"), params, "masks", "the model")
    for name, m in masks.items():
        if m.dtype != torch.bool or m.shape != params[name].shape:
            raise ValueError(f"masks[{name!r}] must be a bool tensor of shape {tuple(params[name].shape)}, got "
                             f"{m.dtype} {tuple(m.shape)}")
    with torch.no_grad():
        for name, m in masks.items():
            params[name].mul_(m.to(params[name].device))
    return model


def format_saliency_table(saliency: Mapping) -> str:
    """One row per tensor: entries, total saliency, share of the total, largest entry; then the total."""
    rows = [(name, s.numel(), float(s.sum(dtype=torch.float64)), float(s.max()) if s.numel() else 0.0)
            for name, s in saliency.items()]
    total = sum(r[2] for r in rows)
    width = max([len("parameter")] + [len(r[0]) for r in rows])
    lines = [f"{'parameter':<{width}}  {'params':>10}  {'saliency':>12}  {'share':>7}  {'max':>12}"]
    for name, numel, tot, mx in rows:
        share = 100 * tot / total if total > 0 else 0.0
        lines.append(f"{name:<{width}}  {numel:>10}  {tot:>12.5g}  {share:>6.2f}%  {mx:>12.5g}")
    lines.append(f"{'total':<{width}}  {sum(r[1] for r in rows):>10}  {total:>12.5g}  {'100.00%':>7}")
    return "\n".join(lines)
