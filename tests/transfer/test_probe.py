"""The head utilities: fit_linear_head against scipy's L-BFGS on the same objective, find_head, reinitialized."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.optimize import minimize

from ftdfast.transfer.probe import PROBE_L2, find_head, fit_linear_head, reinitialized


def objective(theta, X, y, C, l2):
    W, b = theta[:C * X.shape[1]].reshape(C, -1), theta[C * X.shape[1]:]
    z = X @ W.T + b
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean() + 0.5 * l2 * (W * W).sum()


# (id, n, D, C (head width), classes present, seed)
CASES = [("n20-D3-C2", 20, 3, 2, 2, 0), ("n30-D5-C4", 30, 5, 4, 4, 1), ("n16-D4-C5-two-unused", 16, 4, 5, 3, 2)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fit_linear_head_minimizes_the_penalized_cross_entropy(case):
    _, n, D, C, present, seed = case
    rng = np.random.default_rng(seed)
    y = np.arange(n) % present
    X = rng.normal(size=(n, D)) + np.eye(present, D)[y]
    head = fit_linear_head(X, y, C)
    ours = np.concatenate([head.weight.detach().double().numpy().ravel(), head.bias.detach().double().numpy()])
    ref = minimize(objective, np.zeros(C * D + C), args=(X, y, C, PROBE_L2), method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000})
    assert objective(ours.astype(np.float64), X, y, C, PROBE_L2) == pytest.approx(ref.fun, abs=1e-6)


def test_find_head_is_the_last_linear_unless_named():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert find_head(net) == "2"
    assert find_head(net, "0") == "0"
    with pytest.raises(ValueError, match="not an nn.Linear"):
        find_head(net, "1")
    with pytest.raises(ValueError, match="no submodule 'fc9'"):
        find_head(net, "fc9")
    with pytest.raises(ValueError, match="no nn.Linear"):
        find_head(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_reinitialized_equals_a_fresh_build_from_the_same_seed():
    torch.manual_seed(5)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    trained = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 7))
    for p in trained.parameters():
        p.data.fill_(1.0)
    net = reinitialized(trained, "2", 2, seed=5)
    assert net[2].out_features == 2
    assert torch.equal(net[0].weight, fresh[0].weight) and torch.equal(net[0].bias, fresh[0].bias)
    assert torch.equal(trained[0].weight, torch.ones(4, 3))  # the source is left alone


def test_reinitialized_refuses_modules_it_cannot_reset():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.s

    net = nn.Sequential(Scale(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="target_model="):
        reinitialized(net, "1", 2, seed=0)
