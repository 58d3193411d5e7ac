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



def _tiny_factors(dtype, wide=None):
    """One factor of each built-in kind, plus a duck-typed one, from tensors rounded to ``dtype`` (then cast to
    ``wide``), whose per-sample gradient entries are ~1e-5 (squares ~1e-10: below float16's smallest subnormal)."""
    from ftdfast.fisher.conv_weight import ConvWeight
    from ftdfast.fisher.factors import Stacked

    def t(scale, *shape, seed):
        r = (_g(*shape, seed=seed) * scale).to(dtype)
        return r if wide is None else r.to(wide)
    a, b, x, gy = t(1e-2, 4, 3, 5, seed=1), t(1e-3, 4, 3, 2, seed=2), t(1e-2, 4, 2, 5, 5, seed=3), \
        t(1e-4, 4, 3, 3, 3, seed=4)
    ids = torch.tensor([[0, 2, 2], [1, 1, 3], [0, 0, 0], [3, 2, 1]])
    return {"outer": Outer(a, b, (2, 5)), "per_sample": PerSample(t(1e-4, 4, 6, seed=5)),
            "conv": ConvWeight(x, gy, (3, 2, 3, 3), (1, 1), (0, 0), (1, 1), 1),
            "scatter": Scatter(ids, b, (4, 2)), "stacked": Stacked((Outer(a, b, (2, 5)), Outer(a, b, (2, 5)))),
            "duck_typed": Explicit(t(1e-4, 4, 6, seed=6))}


def test_16_bit_factors_are_squared_and_summed_in_float32():
    for dtype in (torch.float16, torch.bfloat16):
        reference = _tiny_factors(dtype, wide=torch.float64)  # the same rounded factors, squared in float64
        for kind, f in _tiny_factors(dtype).items():
            want = squares.sum_of_squares([reference[kind]])
            got = squares.sum_of_squares([f])
            assert got.dtype == torch.float32, (dtype, kind)
            assert bool((got[want > 0] > 0).all()), (dtype, kind)  # no square underflowed
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0, msg=lambda m: f"{dtype} {kind}: {m}")


def test_float32_and_float64_tensors_are_not_copied_to_be_squared():
    from ftdfast.fisher.factors import square_dtype, widen
    for dtype in (torch.float32, torch.float64):
        t = _g(3, 2).to(dtype)
        assert widen(t) is t and square_dtype(dtype) is dtype
        assert squares.sum_of_squares([_tiny_factors(dtype)["outer"]]).dtype == dtype
