"""task_distance on tiny networks, against a per-sample autograd Fisher and a NumPy distance."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ftdfast.distance import cosine_distance, fisher_task_distance, legacy_distance, task_distance

OPTS = dict(progress=False, fisher="empirical")  # the oracle below is the empirical Fisher


def net(seed, hidden=4, outputs=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, outputs)).double().eval()


def data(seed, n=17, shift=0.0, classes=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64) + shift
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


def loop_fisher(model, x, y, loss="cross_entropy"):
    """Empirical diagonal Fisher by one autograd call per sample (independent of ftdfast.fisher)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        out = model(x[i:i + 1])
        if loss == "cross_entropy":
            value = F.cross_entropy(out, y[i:i + 1], reduction="sum")
        else:
            value = F.mse_loss(out, y[i:i + 1], reduction="sum")
        for acc, g in zip(total, torch.autograd.grad(value, params)):
            acc += g.square()
    return [t.detach().numpy() / len(x) for t in total]


def np_ftd(fa, fb):
    p = np.concatenate([t.reshape(-1) for t in fa])
    q = np.concatenate([t.reshape(-1) for t in fb])
    p, q = p / p.sum(), q / q.sum()
    return float(np.linalg.norm(np.sqrt(p) - np.sqrt(q)) / math.sqrt(2.0))


def test_matches_per_sample_reference_and_is_asymmetric():
    net_a, net_b = net(0), net(1)
    data_a, data_b = data(10), data(11, shift=1.5)
    d_ab = task_distance(net_a, net_b, data_b, **OPTS)
    d_ba = task_distance(net_b, net_a, data_a, **OPTS)
    assert d_ab == pytest.approx(np_ftd(loop_fisher(net_a, *data_b), loop_fisher(net_b, *data_b)), abs=1e-10)
    assert d_ba == pytest.approx(np_ftd(loop_fisher(net_b, *data_a), loop_fisher(net_a, *data_a)), abs=1e-10)
    assert 0.0 < d_ab < 1.0 and 0.0 < d_ba < 1.0
    assert abs(d_ab - d_ba) > 1e-3


def test_same_network_is_zero():
    n = net(2)
    assert task_distance(n, n, data(12), **OPTS) == pytest.approx(0.0, abs=1e-7)


def test_methods_apply_the_matching_formula():
    net_a, net_b, d = net(3), net(4), data(13)
    fa, fb = loop_fisher(net_a, *d), loop_fisher(net_b, *d)
    a, b = np.concatenate([t.reshape(-1) for t in fa]), np.concatenate([t.reshape(-1) for t in fb])
    ftd = np_ftd(fa, fb)
    assert task_distance(net_a, net_b, d, method="fisher", **OPTS) == pytest.approx(ftd, abs=1e-10)
    assert task_distance(net_a, net_b, d, method="legacy", **OPTS) == pytest.approx(ftd ** 2, abs=1e-10)
    cos = 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert task_distance(net_a, net_b, d, method="cosine", **OPTS) == pytest.approx(cos, abs=1e-10)


def test_data_forms_agree():
    net_a, net_b = net(5), net(6)
    x, y = data(14, n=23)
    expected = task_distance(net_a, net_b, (x, y), **OPTS)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    batches = [(x[i:i + 7], y[i:i + 7]) for i in range(0, 23, 7)]
    holder = SimpleNamespace(x_test=x, y_test=y, x_train=None, y_train=None)
    for form in (loader, batches, holder):
        assert task_distance(net_a, net_b, form, **OPTS) == pytest.approx(expected, abs=1e-12)
    # fisher options reach fisher_diagonal: max_samples changes the data used
    assert task_distance(net_a, net_b, (x, y), max_samples=9, **OPTS) == pytest.approx(
        np_ftd(loop_fisher(net_a, x[:9], y[:9]), loop_fisher(net_b, x[:9], y[:9])), abs=1e-10)


def test_task_data_loss_attribute_is_the_default_loss():
    net_a, net_b = net(7), net(8)
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(11, 3, generator=gen, dtype=torch.float64)
    task = SimpleNamespace(x_test=x, y_test=y, loss="mse")
    got = task_distance(net_a, net_b, task, **OPTS)
    assert got == pytest.approx(np_ftd(loop_fisher(net_a, x, y, "mse"), loop_fisher(net_b, x, y, "mse")), abs=1e-10)
    assert got == pytest.approx(task_distance(net_a, net_b, (x, y), loss="mse", **OPTS), abs=1e-12)

    # an explicit loss wins over the attribute
    def quartic(out, target):
        return (out - target).pow(4).sum(1)

    explicit = task_distance(net_a, net_b, task, loss=quartic, **OPTS)
    assert explicit == pytest.approx(task_distance(net_a, net_b, (x, y), loss=quartic, **OPTS), abs=1e-12)
    assert abs(explicit - got) > 1e-3


def test_agrees_with_fisher_task_distance_of_the_two_fishers():
    from ftdfast.fisher import fisher_diagonal
    net_a, net_b, d = net(9), net(10), data(16)
    fa = fisher_diagonal(net_a, d, **OPTS)
    fb = fisher_diagonal(net_b, d, **OPTS)
    assert task_distance(net_a, net_b, d, **OPTS) == fisher_task_distance(fa, fb)
    assert task_distance(net_a, net_b, d, method="legacy", **OPTS) == legacy_distance(fa, fb)
    assert task_distance(net_a, net_b, d, method="cosine", **OPTS) == cosine_distance(fa, fb)


def test_different_heads_are_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"'2.weight' has shape \[3, 4\] in net_a but \[5, 4\].*num_outputs"
                                         r".*head='legacy'"):
        task_distance(net(0), net(1, outputs=5), data(17), **OPTS)
    other = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3), nn.Linear(3, 3)).double().eval()
    with pytest.raises(ValueError, match="'3.weight' of net_b is not a trainable parameter of net_a"):
        task_distance(net(0), other, data(17), **OPTS)
    frozen = net(1)
    frozen[0].bias.requires_grad_(False)
    with pytest.raises(ValueError, match="'0.bias' of net_a is not a trainable parameter of net_b"):
        task_distance(net(0), frozen, data(17), **OPTS)


def test_a_measure_registered_in_one_line_is_used(monkeypatch):
    from ftdfast.distance import MEASURES
    monkeypatch.setitem(MEASURES, "twice", lambda F_ab, F_bb: 2 * fisher_task_distance(F_ab, F_bb))
    d = data(19)
    assert task_distance(net(0), net(1), d, method="twice", **OPTS) == pytest.approx(
        2 * task_distance(net(0), net(1), d, **OPTS), rel=1e-12)


def test_bad_arguments():
    d = data(18)
    with pytest.raises(ValueError, match=r"method='euclid' is not one of \('fisher', 'cosine', 'legacy'\)"):
        task_distance(net(0), net(1), d, method="euclid", **OPTS)
    with pytest.raises(TypeError, match="net_b must be an nn.Module"):
        task_distance(net(0), "net_b.pt", d, **OPTS)
    with pytest.raises(ValueError, match="one-shot iterator.*reads it twice"):
        task_distance(net(0), net(1), iter([d]), **OPTS)


def test_dead_network_gives_the_zero_trace_error():
    dead = net(0)
    with torch.no_grad():
        for p in dead.parameters():
            p.zero_()
    alive = net(1)
    x, y = data(19)
    # a zero network has gradient only on the last bias; freeze it so that all gradients are zero
    dead[2].bias.requires_grad_(False)
    alive[2].bias.requires_grad_(False)
    with pytest.raises(ValueError, match="F_ab has trace 0.*gradients on the data are all zero"):
        task_distance(dead, alive, (x, y), **OPTS)


def test_one_default_fisher_for_every_distance_entry_point():
    """task_distance, distance_matrix and the transfer estimator ftd share one default Fisher: the label-free one."""
    import inspect

    from ftdfast.distance import distance_matrix
    from ftdfast.distance.task import DEFAULT_FISHER
    from ftdfast.fisher import fisher_diagonal
    from ftdfast.transfer import estimators

    assert DEFAULT_FISHER == "exact"
    assert inspect.signature(distance_matrix).parameters["fisher"].default == DEFAULT_FISHER
    assert estimators.get("ftd").fisher == DEFAULT_FISHER
    net_a, net_b = net(0), net(1)
    d = data(20)
    fa = fisher_diagonal(net_a, d, fisher="exact", progress=False)
    fb = fisher_diagonal(net_b, d, fisher="exact", progress=False)
    assert task_distance(net_a, net_b, d, progress=False) == pytest.approx(fisher_task_distance(fa, fb), abs=1e-12)
