"""H-score (Bao, Li, Huang, Liu, Xu, ICIP 2019).

With f (n, D) the source's penultimate features on the target data and g the class-conditional
means (g_i = E[f | y = y_i], the mean feature of sample i's class):

    H = tr( cov(f)^+ cov(g) )

cov: the sample covariance (divisor n - 1). Regularization: ``cov(f)^+`` is the Moore-Penrose
pseudo-inverse, eigenvalues below ``rcond`` times the largest treated as zero (features are often
rank-deficient: ReLU units that never fire, fewer samples than dimensions). Higher is better.
Computed on the target's training split.
"""
from __future__ import annotations

import numpy as np

from .base import Estimator, register

#: Relative eigenvalue cutoff of the pseudo-inverse of cov(f).
RCOND = 1e-10


def hscore(features: np.ndarray, labels: np.ndarray, *, rcond: float = RCOND) -> float:
    """tr(cov(f)^+ cov(E[f | y])) of ``features (n, D)`` and ``labels (n,)`` (see the module docstring)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    classes, inverse = np.unique(y, return_inverse=True)
    means = np.zeros((len(classes), f.shape[1]))
    np.add.at(means, inverse, f)
    means /= np.bincount(inverse)[:, None]
    cov_f = np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
    cov_g = np.cov(means[inverse], rowvar=False).reshape(f.shape[1], f.shape[1])
    return float(np.trace(np.linalg.pinv(cov_f, rcond=rcond, hermitian=True) @ cov_g))


@register
class HScore(Estimator):
    """:func:`hscore` of the source's penultimate features on the target's training split. Higher is better."""

    name = "hscore"
    lower_is_better = False
    needs = frozenset({"features"})

    def score(self, source, target, context) -> float:
        return hscore(context.features(source, "train"), context.labels("train"))
