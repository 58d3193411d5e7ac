"""torch.compile smoke tests of the four native ops: they trace (fake/meta kernels), run, and agree with eager.

``aot_eager`` exercises what every backend needs (Dynamo capture with ``fullgraph=True``, the fake
kernels, AOTAutograd) in well under a second per op; one test also runs the default backend
(Inductor), which calls the op as an extern kernel inside generated code.
"""
from __future__ import annotations

import pytest
import torch

from ftdfast.native import _ext

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")
pytestmark = needs_native

# float64 inputs: the compiled and eager calls run the same kernel, so they agree to rounding.
TOL = dict(rtol=1e-12, atol=1e-12)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_case():
    g = _gen(0)
    a, grad = torch.randn(5, 3, 7, generator=g, dtype=torch.float64), torch.randn(5, 3, 4, generator=g,
                                                                                 dtype=torch.float64)

    def fn(a, grad):  # a Python op around the custom op, so the graph is more than the op alone
        return torch.ops.ftdfast.sq_grad_sum_linear(a * 2.0, grad).sqrt()
    return fn, (a, grad)


def conv_case():
    g = _gen(1)
    x = torch.randn(3, 4, 9, 8, generator=g, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64)
    out = torch.nn.functional.conv2d(x, w, stride=2, padding=1, groups=2)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)

    def fn(x, grad):
        return torch.ops.ftdfast.sq_grad_sum_conv(x, grad, [6, 2, 3, 3], [2, 2], [1, 1], [1, 1], 2) + 1.0
    return fn, (x, grad)


def distance_case():
    g = _gen(2)
    fa = [torch.rand(s, generator=g, dtype=torch.float64) for s in ((3, 5), (7,))]
    fb = [torch.rand(s, generator=g, dtype=torch.float64) for s in ((3, 5), (7,))]

    def fn(a0, a1, b0, b1):
        return torch.ops.ftdfast.fisher_distance([a0, a1], [b0 * 3.0, b1])
    return fn, (*fa, *fb)


def matrix_case():
    g = _gen(3)
    rows, cols = torch.rand(3, 40, generator=g, dtype=torch.float64), torch.rand(2, 40, generator=g,
                                                                                dtype=torch.float64)

    def fn(rows, cols):
        return 1.0 - torch.ops.ftdfast.fisher_distance_matrix(rows, cols)
    return fn, (rows, cols)


CASES = {"sq_grad_sum_linear": linear_case, "sq_grad_sum_conv": conv_case,
         "fisher_distance": distance_case, "fisher_distance_matrix": matrix_case}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_compile_aot_eager_matches_eager(case):
    fn, args = case()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), fn(*args), **TOL)


def test_compile_inductor_matrix_matches_eager():
    fn, args = matrix_case()
    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(*args), fn(*args), **TOL)


def test_compile_dynamic_shapes_linear():
    """A second, differently shaped call goes through the fake kernel's symbolic shapes."""
    fn, (a, grad) = linear_case()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=True)
    torch.testing.assert_close(compiled(a, grad), fn(a, grad), **TOL)
    a2, g2 = a[:2, :, :5].contiguous(), grad[:2].contiguous()
    torch.testing.assert_close(compiled(a2, g2), fn(a2, g2), **TOL)
