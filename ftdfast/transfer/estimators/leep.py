"""LEEP, the log expected empirical prediction (Nguyen, Hassner, Seeger, Archambeau, ICML 2020).

Source model with softmax outputs theta(x) over its labels z; target data (x_i, y_i), i = 1..n:

    P(y, z) = (1/n) sum_{i: y_i = y} theta(x_i)_z        (empirical joint, C x Z)
    P(y | z) = P(y, z) / sum_y' P(y', z)
    LEEP = (1/n) sum_i log sum_z P(y_i | z) theta(x_i)_z

Higher is better. Computed on the target's training split.
"""
from __future__ import annotations

import numpy as np

from .base import Estimator, register


def leep(probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of the source's softmax outputs ``probs (n, Z)`` (rows sum to 1) for target labels ``labels (n,)``.

    Source labels z that carry no probability mass on the target data (a zero column of P(y, z))
    get P(y | z) = 0; they contribute nothing either way.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = probs.shape[0]
    joint = np.zeros((int(labels.max()) + 1, probs.shape[1]))
    np.add.at(joint, labels, probs)
    joint /= n
    marginal = joint.sum(0, keepdims=True)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z), (C, Z)
    eep = np.einsum("nz,nz->n", probs, cond[labels])  # sum_z P(y_i | z) theta(x_i)_z
    return float(np.mean(np.log(eep)))


@register
class LEEP(Estimator):
    """:func:`leep` of the source's softmax outputs on the target's training split. Higher is better."""

    name = "leep"
    lower_is_better = False
    needs = frozenset({"outputs"})

    def score(self, source, target, context) -> float:
        return leep(context.outputs(source, "train"), context.labels("train"))
