"""Every backend against the per-sample loop, on every test problem.

float64 at rtol 1e-6; float32 against a float64 reference at an explicit float32
tolerance (rounding at activation kinks can flip single samples, so smooth
activations are used where the problem allows).
"""
import pytest
import torch

import ftdfast

from .problems import PROBLEMS

RTOL64 = 1e-6
RTOL32 = 2e-3  # relative to each parameter's largest entry


def fisher(model, x, y, loss, **kw):
    kw.setdefault("progress", False)
    return ftdfast.fisher_diagonal(model, (x, y), loss=loss, **kw)


def assert_fisher_close(got, want, rtol, atol_scale=1e-12):
    assert list(got) == list(want)
    for name in want:
        ref = want[name].double()
        atol = atol_scale + rtol * float(ref.abs().max())
        torch.testing.assert_close(got[name].double(), ref, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def loop_refs():
    """float64 per-sample-loop references, computed once per problem."""
    cache = {}

    def get(problem):
        if problem.id not in cache:
            model, x, y = problem.build(torch.float64)
            cache[problem.id] = fisher(model, x, y, problem.loss, backend="loop")
        return cache[problem.id]
    return get


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_rules_matches_loop_float64(problem, loop_refs):
    model, x, y = problem.build(torch.float64)
    got = fisher(model, x, y, problem.loss, backend="rules", batch_size=4)
    want = loop_refs(problem)
    assert got.num_samples == want.num_samples == len(y)
    assert want.trace() > 0
    assert_fisher_close(got, want, RTOL64)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_rules_float32_matches_float64_reference(problem, loop_refs):
    model, x, y = problem.build(torch.float32)
    got = fisher(model, x, y, problem.loss, backend="rules")
    assert all(v.dtype == torch.float64 for v in got.values())
    assert_fisher_close(got, loop_refs(problem), RTOL32)


@pytest.mark.parametrize("backend", ["rules", "auto"])
@pytest.mark.parametrize("batch_size", [1, 3, 64], ids=["bs1", "bs3", "one-batch"])
@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p.id in {
    "linear-2d", "linear-3d", "conv2d-stride-pad-dil-groups", "tied-embedding-output"}], ids=lambda p: p.id)
def test_float32_accumulation(problem, batch_size, backend, loop_refs):
    """dtype=float32: batch sums become the accumulators without a copy; still the loop's values."""
    model, x, y = problem.build(torch.float32)
    got = fisher(model, x, y, problem.loss, backend=backend, batch_size=batch_size, dtype=torch.float32)
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in got.values())
    # every parameter owns its storage: no accumulator aliases another or a parameter
    ptrs = [v.untyped_storage().data_ptr() for v in got.values()]
    ptrs += [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(set(ptrs)) == len(ptrs)
    assert_fisher_close(got, loop_refs(problem), RTOL32)


@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p.id in {
    "linear-3d", "conv2d-stride-pad-dil-groups", "batchnorm2d-eval", "embedding-repeats-padding",
    "mha-cross-kdim-vdim", "tied-embedding-output", "mse-regression"}], ids=lambda p: p.id)
def test_func_matches_loop_float64(problem, loop_refs):
    model, x, y = problem.build(torch.float64)
    got = fisher(model, x, y, problem.loss, backend="func", chunk_size=3)
    assert_fisher_close(got, loop_refs(problem), RTOL64)


@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p.id in {
    "linear-2d", "conv2d-stride-pad-dil-groups", "mha-self-batchfirst-padmask", "embedding-repeats-padding"}],
    ids=lambda p: p.id)
def test_batch_size_invariance(problem):
    model, x, y = problem.build(torch.float64)
    results = [fisher(model, x, y, problem.loss, backend="rules", batch_size=b) for b in (1, 3, 64)]
    for other in results[1:]:
        assert_fisher_close(other, results[0], 1e-10)


def test_loop_is_the_plain_definition():
    """The reference itself, against a hand-written per-sample gradient on a single Linear."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
    want_w = torch.zeros(2, 3, dtype=torch.float64)
    for n in range(5):
        p = torch.softmax(lin(x[n]), 0).detach()
        p[y[n]] -= 1
        want_w += torch.outer(p, x[n]) ** 2
    got = fisher(lin, x, y, "cross_entropy", backend="loop")
    torch.testing.assert_close(got["weight"], want_w / 5)
