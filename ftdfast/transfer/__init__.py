"""Transfer: rank trained source models for a new target task (issue 25).

``rank_sources(sources, target, method="leep")`` scores each source with a transferability estimator from
:mod:`ftdfast.transfer.estimators` (ftd, fisher_cosine, leep, logme, nce, hscore, task2vec, otdd) and returns a
:class:`Ranking`. See ``docs/transfer/README.md``.
"""
from . import estimators  # noqa: F401
from .context import Context, Source, TargetData, as_target  # noqa: F401
from .estimators import Estimator, get, names, register  # noqa: F401
from .rank import DEFAULT_METHOD, Ranking, rank_sources  # noqa: F401

__all__ = ["rank_sources", "DEFAULT_METHOD", "Ranking", "estimators", "Estimator", "get", "names", "register", "Context", "Source",
           "TargetData", "as_target"]
