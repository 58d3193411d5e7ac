"""Distances between two diagonal Fishers: the Fisher Task Distance, its square (the authors'
reported value) and the cosine baseline, in one registry, :data:`MEASURES`.

A new measure is one function ``(F_ab, F_bb) -> float`` here and one line in :data:`MEASURES`: ``task_distance``,
``distance_matrix`` and the CLI's ``--method`` read the registry, and an unknown name raises (:func:`get_measure`).

Index letters: P the number of Fisher entries over the whole model.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from ..native import ops
from .inputs import FisherLike, align, checked_total, common_dtype_device


def fisher_task_distance(F_ab: FisherLike, F_bb: FisherLike) -> float:
    """The Fisher Task Distance ``d = || sqrt(F_ab / tr F_ab) - sqrt(F_bb / tr F_bb) ||_2 / sqrt(2)``.

    Args:
        F_ab: the Fisher diagonal of network a (trained on task a) on task b's test data.
        F_bb: the Fisher diagonal of network b (trained on task b) on the same data.
            Each is a :class:`~ftdfast.fisher.FisherDiagonal`, a ``Mapping`` name -> tensor
            or a list/tuple of tensors; both must have the same parameter names (matched by
            name when both are mappings, else by position) and shapes.

    Returns:
        d in [0, 1] as a float: 0 for proportional Fishers, 1 for disjoint supports. The traces
        ``tr`` sum over the whole model, so scaling either Fisher by a positive constant leaves d
        unchanged. Computed with :func:`ftdfast.native.ops.fisher_distance` (native kernel accumulating
        in float64, or the float64 reference); float32 inputs give a result rounded to float32.

    Raises:
        ValueError: names or shapes differ (the first mismatching parameter and both shapes),
            an entry is negative, NaN or infinite, or a Fisher is all zeros (trace 0).
        TypeError: an input of another kind.
    """
    names, a, b = align(F_ab, F_bb, "F_ab", "F_bb")
    checked_total(names, a, "F_ab")
    checked_total(names, b, "F_bb")
    tensors = common_dtype_device(a + b)
    with torch.no_grad():
        d = ops.fisher_distance(tensors[:len(a)], tensors[len(a):])
    return float(d)


def legacy_distance(F_ab: FisherLike, F_bb: FisherLike) -> float:
    """The value the authors' code reports: ``0.5 * || sqrt(F1) - sqrt(F2) ||^2`` of the unit-trace diagonals.

    With ``F1 = F_ab / tr F_ab`` and ``F2 = F_bb / tr F_bb`` this is exactly the square of
    :func:`fisher_task_distance`, and that is how it is computed here (on the inputs as given:
    no other processing). It is in [0, 1] and ranks pairs like ``d`` does, but it is not a
    metric (no triangle inequality) and compresses small distances. Heads of different widths
    are the caller's business: pad them first with :func:`~ftdfast.distance.pad_to_common`.
    """
    return fisher_task_distance(F_ab, F_bb) ** 2


def cosine_distance(F_a: FisherLike, F_b: FisherLike) -> float:
    """``1 - cos(F_a, F_b)`` of the raw (unnormalized, flattened) diagonals, the paper's baseline.

    Computed in float64 parameter by parameter (no concatenated copy). For non-negative
    Fishers it is in [0, 1] (clamped there against rounding): 0 for proportional
    diagonals, 1 for disjoint supports. Same input forms and checks as
    :func:`fisher_task_distance`; an all-zero Fisher has no direction and is an error.
    """
    names, a, b = align(F_a, F_b, "F_a", "F_b")
    checked_total(names, a, "F_a", what="norm")
    checked_total(names, b, "F_b", what="norm")
    dot = aa = bb = 0.0
    with torch.no_grad():
        for x, y in zip(a, b):
            x64 = x.double()
            y64 = y.to(device=x.device, dtype=torch.float64)
            dot += torch.dot(x64.reshape(-1), y64.reshape(-1)).item()
            aa += torch.dot(x64.reshape(-1), x64.reshape(-1)).item()
            bb += torch.dot(y64.reshape(-1), y64.reshape(-1)).item()
    cos = dot / (math.sqrt(aa) * math.sqrt(bb))
    return min(1.0, max(0.0, 1.0 - cos))


#: The distance measures by name: ``task_distance(method=...)``, ``distance_matrix(method=...)`` and
#: ``ftdfast distance --method`` accept exactly these.
MEASURES: Dict[str, Callable[[FisherLike, FisherLike], float]] = {
    "fisher": fisher_task_distance,
    "cosine": cosine_distance,
    "legacy": legacy_distance,
}

#: The measure of every entry point unless ``method=`` says otherwise: the paper's Fisher Task Distance.
DEFAULT_MEASURE = "fisher"


def get_measure(name: str) -> Callable[[FisherLike, FisherLike], float]:
    """The measure registered as ``name`` in :data:`MEASURES`; a ValueError naming the choices otherwise."""
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"method={name!r} is not one of {tuple(MEASURES)} (ftdfast.distance.MEASURES)") from None
