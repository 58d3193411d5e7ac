"""Fisher-weighted model merging (Matena and Raffel, "Merging Models with Fisher-Weighted Averaging", 2022)."""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ._names import align_names, check_fisher, match_names, parameters_of, tensors_of
from ..fisher.parallel import unwrap_model

# The validation-best recipe of benchmarks/evidence/merge_floor.py (tiny ViTs, MNIST + Fashion-MNIST; docs/uses.md): unit-mean
# Fishers, floor 1e-2 (2.6% of entries flattened to the plain average; eps=1 un-normalized flattened 82%).
DEFAULT_EPS = 1e-2
DEFAULT_NORMALIZE = True


def _state_of(model: Any, k: int) -> Dict[str, Any]:
    if isinstance(model, nn.Module):
        return dict(unwrap_model(model).state_dict())
    if isinstance(model, Mapping):
        return dict(model)
    raise TypeError(f"models[{k}] must be an nn.Module or a state_dict, got {type(model).__name__}")


def _unit_mean(fisher: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``fisher`` divided by its mean entry (float64); all zeros stay zeros."""
    total = sum(float(v.sum(dtype=torch.float64)) for v in fisher.values())
    count = sum(v.numel() for v in fisher.values())
    scale = count / total if total > 0 else 1.0
    return {n: v.detach().to(torch.float64) * scale for n, v in fisher.items()}


def _check_weights(weights: Optional[Sequence[float]], k: int) -> List[float]:
    if weights is None:
        return [1.0 / k] * k
    w = [float(x) for x in weights]
    if len(w) != k:
        raise ValueError(f"{len(w)} weights for {k} models")
    if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    return [x / sum(w) for x in w]


def fisher_merge(models: Sequence[Any], fishers: Sequence[Mapping], weights: Optional[Sequence[float]] = None, *,
                 eps: float = DEFAULT_EPS, normalize: bool = DEFAULT_NORMALIZE) -> "OrderedDict[str, Any]":
    """Merge K models of one architecture by Fisher-weighted averaging, entry by entry.

    For every parameter entry i (w normalized to sum 1)::

        theta_i = sum_k w_k max(G_k,i, floor) theta_k,i / sum_k w_k max(G_k,i, floor)
        G_k     = F_k / (mean entry of F_k)   with normalize (each Fisher to unit mean), else F_k
        floor   = eps * (mean of all G entries, over every model and parameter)

    so an entry where every model's Fisher is below the floor gets the plain weighted
    average ``sum_k w_k theta_k,i``, and an entry that only model k's data informs comes
    from model k. The floor is relative: scaling every Fisher by one constant changes
    nothing (were all Fishers zero, the result is the plain average). The sums run in
    float64; each result has the dtype and device of model 0's entry.

    Entries that are not in the Fishers: floating-point ones (BatchNorm running mean and
    variance, frozen parameters) get the plain weighted average; integer and bool ones
    (``num_batches_tracked``) and non-tensors are model 0's, unchanged.

    Args:
        models: K >= 1 ``nn.Module`` s (possibly DDP/DataParallel-wrapped) or state_dicts, with
            the same names and shapes, up to one wrapper prefix per model (``module.``,
            ``_orig_mod.``, ``hf.``, ``base_model.model.`` or a nesting: see
            :func:`~ftdfast.uses._names.match_names`); model 0's names are the result's.
        fishers: K mappings name -> tensor of the parameter's shape (e.g.
            :class:`~ftdfast.FisherDiagonal`), fishers[k] computed for models[k] (on its task's
            data); all covering the same parameters, each named as its model or up to one
            wrapper prefix (e.g. a Fisher of a wrapper whose ``.hf`` is the model). Never
            recomputed. Where models[k] is a module, each of its trainable parameters needs an entry.
        weights: K merging coefficients w_k >= 0 (normalized here); default 1/K each.
        eps: the Fisher floor relative to the mean (normalized) Fisher entry, > 0: 0 < eps << 1 is
            Fisher merging, eps >> 1 plain averaging. With ``normalize`` the floor is eps itself.
        normalize: scale each model's Fisher to unit mean entry first (Matena and Raffel normalize
            each Fisher too), so that a task whose Fisher is larger overall (a larger loss, say)
            does not outweigh the others everywhere; a Fisher that is all zero stays zero.
            The defaults (:data:`DEFAULT_EPS`, :data:`DEFAULT_NORMALIZE`) come from the ablation
            in docs/uses.md (benchmarks/evidence/merge_floor.py).

    Returns:
        An ``OrderedDict`` state_dict in model 0's order, with model 0's names (a DDP-wrapped
        module's inner names): ``model.load_state_dict(fisher_merge(...))``.

    Raises:
        ValueError naming the first entry whose shape or Fisher does not match, or the names
        (examples of each side, the prefix guess) that no single wrapper prefix reconciles.
    """
    models, fishers = list(models), list(fishers)
    if not models:
        raise ValueError("fisher_merge needs at least one model")
    if len(fishers) != len(models):
        raise ValueError(f"{len(fishers)} Fishers for {len(models)} models: pass one per model")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (the Fisher floor relative to its mean), got {eps!r}")
    w = _check_weights(weights, len(models))
    states = [_state_of(m, k) for k, m in enumerate(models)]
    order = list(states[0])
    renames = [{n: n for n in order}]  # per model: its names -> model 0's
    for k in range(1, len(states)):
        renames.append(match_names(list(states[k]), order, f"models[{k}]", "models[0]"))
        states[k] = {renames[k][n]: v for n, v in states[k].items()}
        missing = next((n for n in order if n not in states[k]), None)
        if missing is not None:
            raise ValueError(f"models[{k}] has no entry {missing!r}, which models[0] has: the models must share "
                           "one architecture")
        for n in order:
            a, b = states[0][n], states[k][n]
            if isinstance(a, torch.Tensor) and (not isinstance(b, torch.Tensor) or a.shape != b.shape):
                got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise ValueError(f"{n!r} has shape {tuple(a.shape)} in models[0] but {got} in models[{k}]: the "
                                 "models must share one architecture; models with different heads (e.g. another "
                                 "num_labels) merge by their shared part: pass state_dicts and Fishers without the "
                                 "head's entries")

    floating = {n: v for n, v in states[0].items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    fs = []
    for k, (m, f) in enumerate(zip(models, fishers)):
        f = align_names(tensors_of(f, f"fishers[{k}]"), floating, f"fishers[{k}]",
                        "models[0]'s floating-point state")
        check_fisher(f, floating, f"fishers[{k}]")
        if k and f.keys() != fs[0].keys():
            odd = next(n for n in list(fs[0]) + list(f) if (n in f) != (n in fs[0]))
            where = f"fishers[{k}]" if odd in f else "fishers[0]"
            raise ValueError(f"{where} has an entry {odd!r} that the other lacks: every Fisher must cover the same "
                           "parameters")
        if isinstance(m, nn.Module):
            for n, p in parameters_of(m).items():
                if p.requires_grad and renames[k][n] not in f:
                    raise ValueError(f"models[{k}]'s trainable parameter {n!r} has no entry in fishers[{k}]; pass "
                                   "the Fisher of that model")
        fs.append(f)

    if normalize:
        fs = [_unit_mean(f) for f in fs]
    total = sum(float(f[n].sum(dtype=torch.float64)) for f in fs for n in f)
    count = sum(f[n].numel() for f in fs for n in f)
    floor = eps * total / count if total > 0 else 1.0
    merged: "OrderedDict[str, Any]" = OrderedDict()
    for n in order:
        v0 = states[0][n]
        if n not in floating:
            merged[n] = v0.clone() if isinstance(v0, torch.Tensor) else v0
            continue
        thetas = [s[n].detach().to(v0.device, torch.float64) for s in states]
        if n in fs[0]:
            num = torch.zeros_like(thetas[0])
            den = torch.zeros_like(thetas[0])
            for wk, fk, tk in zip(w, fs, thetas):
                g = fk[n].detach().to(v0.device, torch.float64).clamp(min=floor) * wk
                num.addcmul_(g, tk)
                den.add_(g)
            value = num.div_(den)
        else:
            value = sum(wk * tk for wk, tk in zip(w, thetas))
        merged[n] = value.to(v0.dtype)
    return merged
