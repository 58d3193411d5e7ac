"""OTDD, the optimal transport dataset distance (Alvarez-Melis, Fusi, NeurIPS 2020), with POT's exact solver.

Each dataset is a set of labelled samples (x, y); each class y is summarised by the distribution of its
inputs, approximated by a Gaussian N(m_y, diag s_y^2) (per-dimension mean and standard deviation: a
diagonal simplification of the paper's full covariances, which keeps the cost linear in the input size).
The ground cost between samples of the two datasets is

    c((x, y), (x', y')) = ||x - x'||^2 + W_2^2(N_y, N'_y'),   W_2^2 = ||m_y - m'_y'||^2 + ||s_y - s'_y'||^2

and OTDD = (min over couplings pi of the uniform weights of sum_ij pi_ij c_ij)^(1/2), the 2-Wasserstein
distance of the two datasets under that cost. Inputs are the raw inputs, flattened (the paper's choice for
*NIST). Symmetric; lower is better. Needs the sources' own data (sources given as ``TaskData``): the
source's training split against the target's, each cut to ``max_samples`` samples. Needs POT
(``pip install pot``).
"""
from __future__ import annotations

import numpy as np

from ..context import Source
from .base import Estimator, register

MAX_SAMPLES = 1000


def _ot():
    try:
        import ot
    except ImportError as e:
        raise ImportError("the otdd estimator needs POT, the Python Optimal Transport package: pip install pot") from e
    return ot


def class_gaussians(x: np.ndarray, y: np.ndarray):
    """``(classes (K,), class index of each sample (n,), means (K, d), stds (K, d))`` of ``x (n, d)`` per label
    of ``y (n,)`` (standard deviations with divisor n_y)."""
    classes, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)[:, None]
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, inverse, x)
    means /= counts
    sq = np.zeros_like(means)
    np.add.at(sq, inverse, (x - means[inverse]) ** 2)
    return classes, inverse, means, np.sqrt(sq / counts)


def otdd(x_a: np.ndarray, y_a: np.ndarray, x_b: np.ndarray, y_b: np.ndarray) -> float:
    """OTDD between datasets ``(x_a (n, ...), y_a (n,))`` and ``(x_b (m, ...), y_b (m,))`` (module docstring)."""
    ot = _ot()
    xa = np.asarray(x_a, dtype=np.float64).reshape(len(x_a), -1)
    xb = np.asarray(x_b, dtype=np.float64).reshape(len(x_b), -1)
    _, ia, ma, sa = class_gaussians(xa, np.asarray(y_a))
    _, ib, mb, sb = class_gaussians(xb, np.asarray(y_b))
    label_w2 = (((ma[:, None] - mb[None]) ** 2).sum(-1) + ((sa[:, None] - sb[None]) ** 2).sum(-1))  # (Ka, Kb)
    cost = np.maximum((xa * xa).sum(1)[:, None] + (xb * xb).sum(1)[None] - 2 * xa @ xb.T, 0.0)
    cost += label_w2[ia][:, ib]
    value = ot.emd2(np.full(len(xa), 1 / len(xa)), np.full(len(xb), 1 / len(xb)), cost, numItermax=10_000_000)
    return float(np.sqrt(max(float(value), 0.0)))


@register
class OTDD(Estimator):
    """:func:`otdd` between the source's training data and the target's. Lower is better."""

    name = "otdd"
    lower_is_better = True
    needs = frozenset({"source_data"})

    def __init__(self, *, max_samples: int = MAX_SAMPLES):
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"otdd: max_samples must be an int >= 1, got {max_samples!r}")
        self.max_samples = max_samples
        self.options = {"max_samples": max_samples}

    def score(self, source: Source, target, context) -> float:
        if source.data is None:
            raise ValueError(f"otdd compares datasets and needs the sources' data, but source {source.name!r} is a "
                             "trained network only: pass sources as name -> TaskData, or use an estimator that "
                             "reads the source network (ftd, leep, logme, nce, hscore)")
        k = self.max_samples
        x_b, y_b = context.data("train")
        return otdd(source.data.x_train[:k].cpu().numpy(), source.data.y_train[:k].cpu().numpy(),
                    x_b[:k].cpu().numpy(), y_b[:k].cpu().numpy())
