"""The Fisher diagonal where people use it: EWC, Fisher-weighted merging and Fisher pruning.

Each part takes a :class:`~ftdfast.FisherDiagonal` (or any mapping name -> tensor) and
never recomputes it. See docs/uses.md.

- :class:`EWC`: the elastic-weight-consolidation penalty (several tasks, online with decay).
- :func:`fisher_merge`: Fisher-weighted averaging of models of one architecture.
- :func:`fisher_saliency`, :func:`prune_masks`, :func:`apply_masks`: pruning by ``F theta^2 / 2``.
"""
from .ewc import EWC
from .merge import fisher_merge
from .saliency import apply_masks, fisher_saliency, format_saliency_table, prune_masks

__all__ = ["EWC", "fisher_merge", "fisher_saliency", "prune_masks", "apply_masks", "format_saliency_table"]
