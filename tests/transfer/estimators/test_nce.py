"""NCE against conditional entropies worked out by hand."""
import math

import numpy as np
import pytest

from ftdfast.transfer.estimators import get
from ftdfast.transfer.estimators.nce import nce


def H(*p):
    return -sum(q * math.log(q) for q in p if q > 0)


# (id, source hard predictions z, target labels y, -H(Y | Z) worked out by hand)
CASES = [
    # Z=0: y in {0, 1} half and half; Z=1: y = 1, 1, 0
    ("two-groups", [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], -(2 / 5 * H(1 / 2, 1 / 2) + 3 / 5 * H(2 / 3, 1 / 3))),
    ("y-is-a-function-of-z", [3, 3, 0, 1, 1], [1, 1, 0, 2, 2], 0.0),
    ("z-constant", [2, 2, 2, 2], [0, 1, 1, 1], -H(1 / 4, 3 / 4)),
    # Z=0: y = 0, 0, 1, 2; Z=2: y = 2, 2
    ("three-classes", [0, 0, 0, 0, 2, 2], [0, 0, 1, 2, 2, 2], -(4 / 6 * H(1 / 2, 1 / 4, 1 / 4) + 2 / 6 * H(1.0))),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_nce_by_hand(case):
    _, z, y, want = case
    assert nce(np.array(z), np.array(y)) == pytest.approx(want, abs=1e-14)


def test_estimator_takes_the_argmax_of_the_outputs():
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1, 0])

    class Ctx:
        def outputs(self, source, split):
            assert split == "train"
            return probs

        def labels(self, split):
            return y

    assert get("nce").score(None, None, Ctx()) == pytest.approx(CASES[0][3])
