"""Turning the accepted Fisher forms into aligned lists of tensors, with the input checks.

A Fisher diagonal may be given as a :class:`~ftdfast.fisher.FisherDiagonal`, any
``Mapping`` parameter name -> tensor, or a list/tuple of tensors (the k-th tensor
is "parameter [k]"). Two Fishers are compared parameter by parameter: by name when
both are mappings, by position otherwise.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch

FisherLike = Union[Mapping, Sequence[torch.Tensor]]

_HEAD_HINT = ("both Fishers must come from networks with the same parameter names and shapes; for "
              "classification heads of different widths build the networks with the same num_outputs, "
              "or zero-pad the smaller head with ftdfast.distance.pad_to_common (head='legacy')")


def _to_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is a dependency
            np = None
        if np is None or not isinstance(value, np.ndarray):
            raise TypeError(f"{where} must be a tensor (or a NumPy array), got {type(value).__name__}")
        t = torch.from_numpy(value)
    if t.is_complex():
        raise TypeError(f"{where} has the complex dtype {t.dtype}; a Fisher diagonal is real")
    if not t.is_floating_point():
        t = t.double()
    return t


def as_named(F: FisherLike, arg: str) -> Dict[str, torch.Tensor]:
    """``F`` as an ordered dict name -> detached floating tensor (lists get the names ``[0]``, ``[1]``...)."""
    if isinstance(F, Mapping):
        items = list(F.items())
        for name, _ in items:
            if not isinstance(name, str):
                raise TypeError(f"{arg} must map parameter names (str) to tensors, got the key {name!r}")
    elif isinstance(F, (list, tuple)):
        items = [(f"[{k}]", t) for k, t in enumerate(F)]
    elif isinstance(F, torch.Tensor):
        raise TypeError(f"{arg} is a single tensor; pass a FisherDiagonal, a dict name -> tensor, "
                        f"or a list of tensors (e.g. [{arg}])")
    else:
        raise TypeError(f"{arg} must be a FisherDiagonal, a Mapping name -> tensor or a list/tuple of tensors, "
                        f"got {type(F).__name__}")
    if not items:
        raise ValueError(f"{arg} is empty: it has no parameters")
    return {name: _to_tensor(t, f"{arg}[{name!r}]") for name, t in items}


def align(F_a: FisherLike, F_b: FisherLike, arg_a: str, arg_b: str
          ) -> Tuple[List[str], List[torch.Tensor], List[torch.Tensor]]:
    """Names and the two lists of tensors, matched parameter by parameter, with equal shapes.

    Raises:
        ValueError: different parameter names or counts, or the first parameter whose shapes differ
            (its name and both shapes).
    """
    a, b = as_named(F_a, arg_a), as_named(F_b, arg_b)
    if isinstance(F_a, Mapping) and isinstance(F_b, Mapping):
        missing = [n for n in a if n not in b]
        extra = [n for n in b if n not in a]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} parameter(s) of {arg_a} are not in {arg_b} (first: {missing[0]!r})")
            if extra:
                parts.append(f"{len(extra)} parameter(s) of {arg_b} are not in {arg_a} (first: {extra[0]!r})")
            raise ValueError("; ".join(parts) + f": {_HEAD_HINT}")
        names = list(a)
        list_b = [b[n] for n in names]
    else:
        if len(a) != len(b):
            raise ValueError(f"{arg_a} has {len(a)} parameters but {arg_b} has {len(b)}: {_HEAD_HINT}")
        names = list(a) if isinstance(F_a, Mapping) else list(b)
        list_b = list(b.values())
    list_a = list(a.values())
    for name, x, y in zip(names, list_a, list_b):
        if x.shape != y.shape:
            raise ValueError(f"parameter {name!r} has shape {list(x.shape)} in {arg_a} but {list(y.shape)} "
                             f"in {arg_b}: {_HEAD_HINT}")
    return names, list_a, list_b


def checked_total(names: Sequence[str], tensors: Sequence[torch.Tensor], arg: str, *, what: str = "trace") -> float:
    """Check one Fisher's entries (finite, non-negative, not all zero) and return its trace (float64 sum)."""
    total = 0.0
    for name, t in zip(names, tensors):
        if t.numel() == 0:
            continue
        s = t.sum(dtype=torch.float64).item()
        if s != s or s in (float("inf"), float("-inf")):
            kind = "NaN" if torch.isnan(t).any() else "infinite"
            raise ValueError(f"{arg}[{name!r}] has {kind} entries; a Fisher diagonal must be finite "
                             "(check the network's outputs and the data for inf/NaN)")
        low = t.min().item()
        if low < 0:
            raise ValueError(f"{arg}[{name!r}] has a negative entry (min {low:.6g}); a Fisher diagonal is a "
                             "mean of squared gradients and must be non-negative")
        total += s
    if not total > 0:
        raise ValueError(f"{arg} has {what} 0 (every entry is zero): the network's gradients on the data are all "
                         "zero, so this Fisher cannot be normalized. Check that the parameters are trainable and "
                         "that the loss depends on them (e.g. not a dead or saturated network)")
    return total


def common_dtype_device(tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """One float32/float64 dtype and one device for all (else float64 on the CPU), as the ops want."""
    first = tensors[0]
    same = all((t.dtype, t.device) == (first.dtype, first.device) for t in tensors)
    if same and first.dtype in (torch.float32, torch.float64):
        return list(tensors)
    devices = {t.device for t in tensors}
    device = first.device if len(devices) == 1 else torch.device("cpu")
    return [t.to(device=device, dtype=torch.float64) for t in tensors]
