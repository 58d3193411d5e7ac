"""otdd against a cost matrix written out by hand and, for small sets, a brute-force assignment."""
import itertools
import math

import numpy as np
import pytest

pytest.importorskip("ot", reason="the otdd estimator needs POT (pip install pot)")

from ftdfast.transfer.estimators import get  # noqa: E402
from ftdfast.transfer.estimators.otdd import otdd  # noqa: E402


def test_two_points_each_by_hand():
    # a: x=0 (class 0), x=2 (class 1); b: x=1 (class 0), x=5 (class 1). One sample per class: each class's
    # Gaussian is a point mass (std 0), so W2^2 between classes = squared distance of the points.
    # costs: (0,1): 1 + 1 = 2; (0,5): 25 + 25 = 50; (2,1): 1 + 1 = 2; (2,5): 9 + 9 = 18.
    # couplings of uniform weights on 2 + 2 points: identity (2 + 18) / 2 = 10, swap (50 + 2) / 2 = 26.
    got = otdd(np.array([[0.0], [2.0]]), np.array([0, 1]), np.array([[1.0], [5.0]]), np.array([0, 1]))
    assert got == pytest.approx(math.sqrt(10.0))


def brute_force(xa, ya, xb, yb):
    """Equal sizes, uniform weights: the optimal coupling is a permutation (Birkhoff); try them all."""
    def gauss(x, y, c):
        pts = x[y == c]
        return pts.mean(0), pts.std(0)

    def label_w2(ca, cb):
        (m1, s1), (m2, s2) = gauss(xa, ya, ca), gauss(xb, yb, cb)
        return sum((p - q) ** 2 for p, q in zip(m1, m2)) + sum((p - q) ** 2 for p, q in zip(s1, s2))

    n = len(xa)
    cost = [[sum((p - q) ** 2 for p, q in zip(xa[i], xb[j])) + label_w2(ya[i], yb[j]) for j in range(n)]
            for i in range(n)]
    return math.sqrt(min(sum(cost[i][p[i]] for i in range(n)) / n for p in itertools.permutations(range(n))))


# (id, seed, samples per set, input dim, classes of a, classes of b)
CASES = [("n4-d2-2x2-classes", 0, 4, 2, 2, 2), ("n6-d3-3x2-classes", 1, 6, 3, 3, 2), ("n5-d1-1x2", 2, 5, 1, 1, 2)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_against_brute_force_assignment(case):
    _, seed, n, d, ka, kb = case
    rng = np.random.default_rng(seed)
    xa, xb = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 1.0
    ya, yb = np.arange(n) % ka, np.arange(n) % kb
    assert otdd(xa, ya, xb, yb) == pytest.approx(brute_force(xa, ya, xb, yb), rel=1e-9)


def test_identical_datasets_are_at_distance_zero():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(8, 1, 2, 2)), np.arange(8) % 2
    assert otdd(x, y, x, y) == pytest.approx(0.0, abs=1e-6)


def test_estimator_needs_source_data():
    from ftdfast.transfer import Source
    import torch.nn as nn
    with pytest.raises(ValueError, match="needs the sources' data"):
        get("otdd").score(Source("a", nn.Linear(2, 2), ""), None, None)
