"""LogME, the logarithm of the maximum evidence (You, Liu, Wang, Long, ICML 2021).

For each target class c, a Bayesian linear regression of the one-hot column y_c (n,) on the source's
penultimate features F (n, D): prior w ~ N(0, alpha^-1 I), noise N(0, beta^-1). Its log evidence

    L(alpha, beta) = n/2 log beta + D/2 log alpha - n/2 log 2 pi - beta/2 ||F m - y_c||^2 - alpha/2 m^T m
                     - 1/2 log det A,     A = alpha I + beta F^T F,  m = beta A^-1 F^T y_c

is maximised by the paper's fixed-point iteration (Algorithm 1): with sigma_j the eigenvalues of F^T F,
gamma = sum_j beta sigma_j / (alpha + beta sigma_j), alpha <- gamma / m^T m,
beta <- (n - gamma) / ||F m - y_c||^2, from alpha = beta = 1 until the relative change of alpha / beta
is below ``tol``. LogME = mean over classes of L(alpha*, beta*) / n, L evaluated with m at the final
alpha, beta. Higher is better. Computed on the target's training split (features as they are: no
centring or scaling, as in the paper).
"""
from __future__ import annotations

import math

import numpy as np

from .base import Estimator, register

MAX_ITER = 100
TOL = 1e-6


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = MAX_ITER, tol: float = TOL) -> float:
    """LogME of ``features (n, D)`` for target labels ``labels (n,)`` (classes 0..C-1; see the module docstring)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n, D = f.shape
    # F^T F = V diag(sigma) V^T; everything below works in that eigenbasis
    sigma, V = np.linalg.eigh(f.T @ f)
    sigma = np.clip(sigma, 0.0, None)
    total = 0.0
    classes = np.unique(y)
    for c in classes:
        yc = (y == c).astype(np.float64)
        proj = V.T @ (f.T @ yc)  # V^T F^T y_c, (D,)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
            m = V @ (beta * proj / (alpha + beta * sigma))
            mm = float(m @ m)
            res = float(np.sum((f @ m - yc) ** 2))
            new_alpha, new_beta = gamma / mm, (n - gamma) / res
            done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m = V @ (beta * proj / (alpha + beta * sigma))
        evidence = (n / 2 * math.log(beta) + D / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                    - beta / 2 * float(np.sum((f @ m - yc) ** 2)) - alpha / 2 * float(m @ m)
                    - 0.5 * float(np.sum(np.log(alpha + beta * sigma))))
        total += evidence / n
    return total / len(classes)


@register
class LogME(Estimator):
    """:func:`logme` of the source's penultimate features on the target's training split. Higher is better."""

    name = "logme"
    lower_is_better = False
    needs = frozenset({"features"})

    def score(self, source, target, context) -> float:
        return logme(context.features(source, "train"), context.labels("train"))
