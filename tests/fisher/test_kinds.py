"""exact, mc and legacy: each against an independent hand computation."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast

from .problems import BY_ID


def _per_sample_grads(model, x_n, loss_fn):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss_fn(model(x_n.unsqueeze(0))), params)


def brute_force_exact_ce(model, x):
    """sum_n sum_c p_nc (d CE(z_n, c)/d theta)^2 / N, one backward per (sample, class)."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    acc = {k: torch.zeros_like(p) for k, p in model.named_parameters() if p.requires_grad}
    for n in range(len(x)):
        with torch.no_grad():
            p = torch.softmax(model(x[n:n + 1]), 1)[0]
        for c in range(p.numel()):
            grads = _per_sample_grads(model, x[n], lambda z: F.cross_entropy(z, torch.tensor([c])))
            for k, g in zip(names, grads):
                acc[k] += p[c] * g * g
    return {k: v / len(x) for k, v in acc.items()}


@pytest.mark.parametrize("pid", ["linear-2d", "conv2d-basic-odd", "mha-self-batchfirst-padmask"])
@pytest.mark.parametrize("backend", ["rules", "loop"])
def test_exact_cross_entropy_is_the_sum_over_classes(pid, backend):
    model, x, y = BY_ID[pid].build(torch.float64)
    got = ftdfast.fisher_diagonal(model, (x, y), fisher="exact", backend=backend, progress=False)
    want = brute_force_exact_ce(model, x)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-12)


def test_exact_mse_is_the_gauss_newton_diagonal():
    """For loss = mean_k (f_k - y_k)^2 read as a Gaussian NLL with variance D/2: F = (2/D) sum_k J_k^2."""
    model, x, y = BY_ID["mse-regression"].build(torch.float64)
    got = ftdfast.fisher_diagonal(model, (x, y), loss="mse", fisher="exact", progress=False)
    d = y[0].numel()
    names = [k for k, _ in model.named_parameters()]
    want = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for n in range(len(x)):
        out = model(x[n:n + 1]).reshape(-1)
        for k_out in range(d):
            grads = torch.autograd.grad(out[k_out], list(model.parameters()), retain_graph=True)
            for k, g in zip(names, grads):
                want[k] += (2.0 / d) * g * g
    for k in names:
        torch.testing.assert_close(got[k], want[k] / len(x), rtol=1e-6, atol=1e-14)


def test_exact_bce_matches_loop():
    model, x, y = BY_ID["bce-multilabel"].build(torch.float64)
    got = ftdfast.fisher_diagonal(model, (x, y), loss="bce_with_logits", fisher="exact", progress=False)
    want = ftdfast.fisher_diagonal(model, (x, y), loss="bce_with_logits", fisher="exact", backend="loop",
                                   progress=False)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-14)


def _rel_err(a, b):
    num = math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in b))
    den = math.sqrt(sum(float((b[k] ** 2).sum()) for k in b))
    return num / den


@pytest.mark.parametrize("pid,loss", [("linear-2d", "cross_entropy"), ("mse-regression", "mse"),
                                      ("bce-multilabel", "bce_with_logits")])
def test_mc_converges_to_exact(pid, loss):
    model, x, y = BY_ID[pid].build(torch.float64)
    exact = ftdfast.fisher_diagonal(model, (x, y), loss=loss, fisher="exact", progress=False)
    errors = []
    for k in (4, 64, 1024):
        mc = ftdfast.fisher_diagonal(model, (x, y), loss=loss, fisher="mc", mc_samples=k,
                                     generator=torch.Generator().manual_seed(7), progress=False)
        errors.append(_rel_err(mc, exact))
    assert errors[2] < errors[0]
    assert errors[2] < 0.1, errors


def test_mc_is_reproducible_with_a_generator():
    model, x, y = BY_ID["linear-2d"].build(torch.float64)
    runs = [ftdfast.fisher_diagonal(model, (x, y), fisher="mc", mc_samples=3,
                                    generator=torch.Generator().manual_seed(3), progress=False) for _ in range(2)]
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k])


def test_mc_rules_matches_mc_loop_with_the_same_draws():
    model, x, y = BY_ID["conv2d-basic-odd"].build(torch.float64)
    kw = dict(fisher="mc", mc_samples=2, progress=False, batch_size=4)
    a = ftdfast.fisher_diagonal(model, (x, y), generator=torch.Generator().manual_seed(1), **kw)
    b = ftdfast.fisher_diagonal(model, (x, y), generator=torch.Generator().manual_seed(1), backend="loop", **kw)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-14)


def test_legacy_is_the_authors_batch_mean_square():
    """Hand computation: squares of batch-mean gradients, averaged over batches, then over dim 0."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randint(0, 2, (7,))
    sq = {"weight": torch.zeros(2, 3, dtype=torch.float64), "bias": torch.zeros(2, dtype=torch.float64)}
    batches = [(0, 3), (3, 6), (6, 7)]
    for a, b in batches:
        p = torch.softmax(lin(x[a:b]), 1).detach()
        p[torch.arange(b - a), y[a:b]] -= 1
        gw = p.T @ x[a:b] / (b - a)
        gb = p.sum(0) / (b - a)
        sq["weight"] += gw ** 2
        sq["bias"] += gb ** 2
    want_w = (sq["weight"] / 3).mean(0, keepdim=True).expand(2, 3)
    want_b = (sq["bias"] / 3).mean().expand(2)
    got = ftdfast.fisher_diagonal(lin, (x, y), backend="legacy", batch_size=3, progress=False)
    torch.testing.assert_close(got["weight"], want_w)
    torch.testing.assert_close(got["bias"], want_b)
    assert got.meta["backend"] == "legacy"


def test_legacy_depends_on_batch_size_and_differs_from_the_fisher():
    model, x, y = BY_ID["linear-2d"].build(torch.float64)
    small = ftdfast.fisher_diagonal(model, (x, y), backend="legacy", batch_size=2, progress=False)
    large = ftdfast.fisher_diagonal(model, (x, y), backend="legacy", batch_size=9, progress=False)
    exact = ftdfast.fisher_diagonal(model, (x, y), progress=False)
    assert not torch.allclose(small["0.weight"], large["0.weight"])
    assert not torch.allclose(large["0.weight"], exact["0.weight"])
