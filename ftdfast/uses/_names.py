"""Matching parameter names between models, Fisher diagonals, anchors and state_dicts.

``DistributedDataParallel`` and ``DataParallel`` wrap a model as ``.module``: the
wrapper's ``named_parameters()`` and ``state_dict()`` put ``module.`` before every
name. Models are unwrapped (:func:`ftdfast.fisher.parallel.unwrap_model`, as
``fisher_diagonal`` does), and a mapping's ``module.`` prefixes are stripped where
that makes its names meet the model's.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Iterable

import torch
import torch.nn as nn

from ..fisher.parallel import unwrap_model

WRAPPER_PREFIX = "module."


def align_names(mapping: Mapping, names: Iterable[str]) -> Dict[str, Any]:
    """``mapping`` as a dict, with ``module.`` prefixes stripped while every key carries one
    and stripping it makes more keys equal to one of ``names``. Nothing else is renamed."""
    wanted = set(names)
    out = dict(mapping)
    while out and all(k.startswith(WRAPPER_PREFIX) for k in out):
        stripped = {k[len(WRAPPER_PREFIX):]: v for k, v in out.items()}
        if len(stripped.keys() & wanted) <= len(out.keys() & wanted):
            break
        out = stripped
    return out


def parameters_of(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``named_parameters()`` of the unwrapped model (frozen ones included)."""
    return dict(unwrap_model(model).named_parameters())


def tensors_of(obj: Any, what: str) -> Dict[str, torch.Tensor]:
    """Parameters of an ``nn.Module`` (unwrapped) or the tensors of a mapping name -> tensor
    (a ``FisherDiagonal``, a state_dict). ``what`` names the argument in errors."""
    if isinstance(obj, nn.Module):
        return parameters_of(obj)
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be an nn.Module or a mapping name -> tensor (a FisherDiagonal, a state_dict), "
                        f"got {type(obj).__name__}")
    for name, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{what}[{name!r}] must be a tensor, got {type(v).__name__}")
    return dict(obj)


def check_fisher(fisher: Dict[str, torch.Tensor], params: Dict[str, torch.Tensor], what: str) -> None:
    """Every Fisher entry names a parameter of the same shape, and is finite and >= 0."""
    for name, f in fisher.items():
        if name not in params:
            near = ", ".join(list(params)[:4]) + (", ..." if len(params) > 4 else "")
            raise ValueError(f"{what} has an entry {name!r} but the model has no parameter of that name "
                           f"(its parameters: {near}); was the Fisher computed on another model?")
        p = params[name]
        if f.shape != p.shape:
            raise ValueError(f"{what}[{name!r}] has shape {tuple(f.shape)} but the parameter has shape "
                             f"{tuple(p.shape)}")
        if not f.is_floating_point():
            raise TypeError(f"{what}[{name!r}] has dtype {f.dtype}; a Fisher diagonal is floating point")
        bad = ~torch.isfinite(f) | (f < 0)
        if bool(bad.any()):
            v = float(f.reshape(-1)[bad.reshape(-1).nonzero()[0]])
            raise ValueError(f"{what}[{name!r}] holds {v}: a Fisher diagonal is finite and >= 0")
