"""derive_seed: one user seed, independent named streams."""
import pytest

from ftdfast.nas import derive_seed


def test_no_labels_keeps_the_seed():
    assert derive_seed(0) == 0 and derive_seed(12345) == 12345


@pytest.mark.parametrize("a,b", [
    ((0, "baseline", "abc"), (0, "baseline", "abd")),
    ((0, "a", 1), (0, "a1")),
    ((0, "a", 1), (0, "a", "1")),
    ((0, "ta_nas"), (1, "ta_nas")),
    ((0, "pool", 0), (0, "pool", 1)),
])
def test_distinct_streams(a, b):
    assert derive_seed(*a) != derive_seed(*b)


def test_repeatable_and_in_range():
    vals = [derive_seed(s, "x", k) for s in range(5) for k in range(20)]
    assert vals == [derive_seed(s, "x", k) for s in range(5) for k in range(20)]
    assert len(set(vals)) == len(vals) and all(0 <= v < 2 ** 63 for v in vals)
    assert derive_seed(-3, "x") >= 0


@pytest.mark.parametrize("seed,labels", [(1.5, ()), (True, ()), (0, (2.0,)), (0, (None,))])
def test_bad_input(seed, labels):
    with pytest.raises(TypeError):
        derive_seed(seed, *labels)
