"""H-score on cases small enough to work out by hand."""
import numpy as np
import pytest

from ftdfast.transfer.estimators import get
from ftdfast.transfer.estimators.hscore import hscore


def test_one_feature():
    # f = 0, 2, 4, 6 with classes 0, 0, 1, 1: class means 1 and 5.
    # cov(f) = (9 + 1 + 1 + 9) / 3 = 20/3; g = 1, 1, 5, 5: cov(g) = (4 * 4) / 3 = 16/3; H = 16/20
    assert hscore(np.array([[0.0], [2.0], [4.0], [6.0]]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def test_a_constant_feature_is_left_out_by_the_pseudo_inverse():
    f = np.array([[0.0, 7.0], [2.0, 7.0], [4.0, 7.0], [6.0, 7.0]])
    assert hscore(f, np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def test_a_feature_without_class_information_adds_nothing():
    # f2 = 1, -1, -1, 1: its class means are both 0, and sum (f1 - 3) * f2 = -3 + 1 - 1 + 3 = 0, so
    # cov(f) = diag(20/3, 4/3) and cov(g) = diag(16/3, 0): H = 0.8 + 0
    f = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, -1.0], [6.0, 1.0]])
    assert hscore(f, np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def test_scaling_a_feature_changes_nothing():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 3))
    y = rng.integers(0, 3, size=30)
    assert hscore(f * np.array([1.0, 10.0, 0.1]), y) == pytest.approx(hscore(f, y), rel=1e-9)


def test_estimator_reads_training_features():
    class Ctx:
        def features(self, source, split):
            assert split == "train"
            return np.array([[0.0], [2.0], [4.0], [6.0]])

        def labels(self, split):
            return np.array([0, 0, 1, 1])

    est = get("hscore")
    assert est.needs == {"features"} and not est.lower_is_better
    assert est.score(None, None, Ctx()) == pytest.approx(0.8)
