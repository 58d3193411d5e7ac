"""LogME against the maximised Gaussian marginal likelihood, computed another way.

The evidence of Bayesian linear regression y ~ N(F w, beta^-1 I), w ~ N(0, alpha^-1 I) is the density of
y under N(0, alpha^-1 F F^T + beta^-1 I) (n x n): evaluated with a Cholesky factor and maximised over
(log alpha, log beta) by scipy's Nelder-Mead, independently of the paper's D x D fixed-point iteration.
"""
import numpy as np
import pytest
from scipy.optimize import minimize

from ftdfast.transfer.estimators import get
from ftdfast.transfer.estimators.logme import logme


def log_marginal(F, y, log_alpha, log_beta):
    n = len(y)
    S = np.exp(-log_alpha) * F @ F.T + np.exp(-log_beta) * np.eye(n)
    L = np.linalg.cholesky(S)
    v = np.linalg.solve(L, y)
    return -0.5 * v @ v - np.log(np.diag(L)).sum() - n / 2 * np.log(2 * np.pi)


def logme_reference(F, labels):
    out = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        res = minimize(lambda p: -log_marginal(F, y, *p), x0=[0.0, 0.0], method="Nelder-Mead",
                       options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000})
        out.append(-res.fun / len(y))
    return float(np.mean(out))


def problem(n, D, C, seed, signal):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % C
    F = rng.normal(size=(n, D)) + signal * np.eye(C, D)[labels]
    return F, labels


# (id, n samples, D features, C classes, seed, class signal in the features)
CASES = [("n12-D3-C2", 12, 3, 2, 0, 1.0), ("n20-D5-C3", 20, 5, 3, 1, 2.0), ("n8-D10-C2-wide", 8, 10, 2, 2, 1.0),
         ("n30-D4-C4-no-signal", 30, 4, 4, 3, 0.0)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_logme_is_the_maximised_evidence(case):
    _, n, D, C, seed, signal = case
    F, labels = problem(n, D, C, seed, signal)
    assert logme(F, labels) == pytest.approx(logme_reference(F, labels), abs=1e-6)


def test_more_class_signal_gives_more_evidence():
    weak, strong = problem(40, 4, 2, 5, 0.2), problem(40, 4, 2, 5, 3.0)
    assert logme(*strong) > logme(*weak)


def test_estimator_reads_training_features():
    F, labels = problem(12, 3, 2, 0, 1.0)

    class Ctx:
        def features(self, source, split):
            assert split == "train"
            return F

        def labels(self, split):
            return labels

    est = get("logme")
    assert est.needs == {"features"} and not est.lower_is_better
    assert est.score(None, None, Ctx()) == pytest.approx(logme(F, labels))
