"""LEEP against exact rational arithmetic (Fraction) and two closed forms."""
import math
from fractions import Fraction as Fr

import numpy as np
import pytest

from ftdfast.transfer.estimators import get
from ftdfast.transfer.estimators.leep import leep

# (id, source softmax outputs theta (n, Z) as fractions, target labels)
CASES = [
    ("3src-4samples", [[Fr(1, 2), Fr(1, 4), Fr(1, 4)], [Fr(1, 10), Fr(8, 10), Fr(1, 10)],
                       [Fr(1, 3), Fr(1, 3), Fr(1, 3)], [Fr(0), Fr(1, 5), Fr(4, 5)]], [0, 1, 1, 0]),
    ("2src-5samples-3classes", [[Fr(9, 10), Fr(1, 10)], [Fr(1, 2), Fr(1, 2)], [Fr(1, 5), Fr(4, 5)],
                                [Fr(3, 4), Fr(1, 4)], [Fr(2, 7), Fr(5, 7)]], [2, 0, 1, 2, 1]),
]


def leep_by_hand(theta, y):
    """The paper's three formulas, term by term, in exact rationals; one log per sample at the end."""
    n, Z, C = len(theta), len(theta[0]), max(y) + 1
    joint = [[sum((theta[i][z] for i in range(n) if y[i] == c), Fr(0)) / n for z in range(Z)] for c in range(C)]
    pz = [sum(joint[c][z] for c in range(C)) for z in range(Z)]
    eep = [sum(joint[y[i]][z] / pz[z] * theta[i][z] for z in range(Z)) for i in range(n)]
    return sum(math.log(e) for e in eep) / n


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_leep_matches_exact_rationals(case):
    _, theta, y = case
    got = leep(np.array(theta, dtype=np.float64), np.array(y))
    assert got == pytest.approx(leep_by_hand(theta, y), rel=1e-12, abs=1e-14)


def test_uniform_source_gives_minus_label_entropy():
    # theta uniform: P(y | z) = P(y) for every z, so LEEP = sum_y P(y) log P(y)
    y = np.array([0, 0, 0, 1, 2, 2])
    got = leep(np.full((6, 4), 0.25), y)
    assert got == pytest.approx(3 / 6 * math.log(3 / 6) + 1 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6))


def test_one_hot_source_that_knows_the_labels_gives_zero():
    y = np.array([1, 0, 2, 1])
    assert leep(np.eye(3)[y], y) == pytest.approx(0.0, abs=1e-15)


def test_estimator_reads_the_training_outputs():
    theta, y = np.array(CASES[0][1], dtype=np.float64), np.array(CASES[0][2])

    class Ctx:
        def outputs(self, source, split):
            assert split == "train"
            return theta

        def labels(self, split):
            return y

    est = get("leep")
    assert not est.lower_is_better and est.needs == {"outputs"}
    assert est.score(None, None, Ctx()) == pytest.approx(leep_by_hand(CASES[0][1], CASES[0][2]))
