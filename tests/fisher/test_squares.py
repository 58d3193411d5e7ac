"""The factor protocol of ftdfast.fisher.factors: squares.py dispatches on methods, never on classes."""
import torch

from ftdfast.fisher import squares
from ftdfast.fisher.factors import Outer, PerSample, SampleFactor, Scatter


def _g(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Explicit:
    """A duck-typed factor that derives from nothing: n, shape, dtype and per_sample only."""

    def __init__(self, g):
        self.g = g
        self.n, self.shape, self.dtype = g.shape[0], tuple(g.shape[1:]), g.dtype

    def per_sample(self, start, stop):
        return self.g[start:stop]


class Counted(SampleFactor):
    """A subclass with only per_sample: the protocol's chunked default square sum."""

    def __init__(self, g):
        self.g, self.n, self.shape, self.dtype = g, g.shape[0], tuple(g.shape[1:]), g.dtype

    def per_sample(self, start, stop):
        return self.g[start:stop]


def test_any_class_with_the_protocol_is_a_factor():
    g = _g(5, 3, 2)
    want = g.square().sum(0)
    torch.testing.assert_close(squares.sum_of_squares([Explicit(g)]), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(squares.sum_of_squares([Counted(g)]), want, rtol=1e-12, atol=0)


def test_calls_of_different_kinds_add_before_the_square():
    """A module called twice whose two calls give factors of different classes (no closed-form merge)."""
    a, b = _g(4, 3, 5, seed=1), _g(4, 3, 2, seed=2)  # Outer: (n, t, i), (n, t, o) -> (o, i) = (2, 5)
    outer = Outer(a, b, (2, 5))
    extra = _g(4, 2, 5, seed=3)
    want = (torch.einsum("nto,nti->noi", b, a) + extra).square().sum(0)
    got = squares.sum_of_squares([outer, Explicit(extra)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    got = squares.sum_of_squares([PerSample(extra), outer])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_same_kind_calls_merge_in_closed_form():
    ids = torch.tensor([[1, 2, 1], [0, 0, 3]])
    b1, b2 = _g(2, 3, 4, seed=4), _g(2, 3, 4, seed=5)
    f1, f2 = Scatter(ids, b1, (5, 4)), Scatter(ids.flip(1), b2, (5, 4))
    assert type(squares._merge([f1, f2])[0]) is Scatter and len(squares._merge([f1, f2])) == 1
    want = (f1.per_sample(0, 2) + f2.per_sample(0, 2)).square().sum(0)
    torch.testing.assert_close(squares.sum_of_squares([f1, f2]), want, rtol=1e-12, atol=1e-14)


def test_factors_that_disagree_on_n_are_refused():
    import pytest
    with pytest.raises(ValueError, match="sample count"):
        squares.sum_of_squares([PerSample(_g(3, 2)), PerSample(_g(4, 2))])
