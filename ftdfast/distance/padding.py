"""Zero padding of classification heads of different widths, as in the authors' code (head="legacy").

When task a has C_a classes and task b has C_b > C_a, the head rows (dim 0 of the last
layer's weight and bias, one row per class) of network a have no counterpart for the
extra classes; the authors pad the smaller Fisher with zero rows so the two can be
compared entry by entry.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F_nn

from .inputs import FisherLike, as_named


def pad_head(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``t`` zero-padded at the end of each dim to ``shape`` (same number of dims, each >= t's).

    Returns ``t`` itself when the shape already matches, else a new tensor whose leading
    block equals ``t`` and whose other entries are 0.
    """
    shape = [int(s) for s in shape]
    if len(shape) != t.dim() or any(s < n for s, n in zip(shape, t.shape)):
        raise ValueError(f"cannot zero-pad a tensor of shape {list(t.shape)} to {shape}: the target must have "
                         f"the same number of dims ({t.dim()}) and be at least as large in each")
    if list(t.shape) == shape:
        return t
    pad = []
    for s, n in zip(reversed(shape), reversed(t.shape)):
        pad += [0, s - n]
    return F_nn.pad(t, pad)


def pad_to_common(F_a: FisherLike, F_b: FisherLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Both Fishers as dicts name -> tensor with equal shapes: the smaller head rows are zero-padded.

    Parameters are matched by name when both are mappings (else by position, with the names
    of whichever is a mapping, or ``[k]``). Where the two shapes differ only in dim 0 (one row
    per output/class: a Linear head's weight (C, h) and bias (C,), a conv head's (C, c, kh, kw)),
    the one with fewer rows gets zero rows appended; every other tensor is returned as is.

    Raises:
        ValueError: different parameter names or counts, or shapes that differ beyond dim 0.
    """
    a, b = as_named(F_a, "F_a"), as_named(F_b, "F_b")
    if isinstance(F_a, Mapping) and isinstance(F_b, Mapping):
        if set(a) != set(b):
            odd = next(n for n in list(a) + list(b) if n not in a or n not in b)
            raise ValueError(f"F_a and F_b have different parameter names ({odd!r} is only in "
                             f"{'F_a' if odd in a else 'F_b'}); zero padding only aligns head rows of the "
                             "same architecture")
        names = list(a)
        list_b = [b[n] for n in names]
    else:
        if len(a) != len(b):
            raise ValueError(f"F_a has {len(a)} parameters but F_b has {len(b)}; zero padding only aligns head "
                             "rows of the same architecture")
        names = list(a) if isinstance(F_a, Mapping) else list(b)
        list_b = list(b.values())
    out_a: Dict[str, torch.Tensor] = {}
    out_b: Dict[str, torch.Tensor] = {}
    for name, x, y in zip(names, a.values(), list_b):
        if x.shape != y.shape:
            if x.dim() != y.dim() or x.dim() == 0 or x.shape[1:] != y.shape[1:]:
                raise ValueError(f"parameter {name!r} has shape {list(x.shape)} in F_a but {list(y.shape)} in F_b: "
                                 "only the head rows (dim 0) may differ for zero padding")
            rows = max(x.shape[0], y.shape[0])
            x = pad_head(x, [rows, *x.shape[1:]])
            y = pad_head(y, [rows, *y.shape[1:]])
        out_a[name], out_b[name] = x, y
    return out_a, out_b
