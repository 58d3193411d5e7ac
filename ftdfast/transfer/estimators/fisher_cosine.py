"""The cosine baseline of the paper: ``1 - cos(F_ab, F_bb)`` of the raw diagonal Fishers, the same Fishers as
:mod:`ftd` (same options). Lower is better."""
from __future__ import annotations

from typing import Callable

from ...distance.measures import cosine_distance
from .base import register
from .ftd import FTD


@register
class FisherCosine(FTD):
    """1 - cosine of F_ab and F_bb (:func:`ftdfast.distance.measures.cosine_distance`), mean over seeds."""

    name = "fisher_cosine"
    measure: Callable[..., float] = staticmethod(cosine_distance)
