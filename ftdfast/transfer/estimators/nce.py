"""NCE, the negative conditional entropy (Tran, Nguyen, Hassner, ICCV 2019).

Z = argmax_z theta(x), the source's hard prediction on each target sample; Y the target label:

    NCE = -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z)

with the empirical joint P(y, z) = #{i: y_i = y, z_i = z} / n. Higher is better (0: Y is a function of Z).
Computed on the target's training split.
"""
from __future__ import annotations

import numpy as np

from .base import Estimator, register


def nce(predicted: np.ndarray, labels: np.ndarray) -> float:
    """-H(Y | Z) in nats from the source's hard predictions ``predicted (n,)`` and target labels ``labels (n,)``."""
    z = np.asarray(predicted, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    joint = np.zeros((int(y.max()) + 1, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / np.where(pz > 0, pz, 1.0))[nz])))


@register
class NCE(Estimator):
    """:func:`nce` of the source's argmax predictions on the target's training split. Higher is better."""

    name = "nce"
    lower_is_better = False
    needs = frozenset({"outputs"})

    def score(self, source, target, context) -> float:
        return nce(context.outputs(source, "train").argmax(1), context.labels("train"))
