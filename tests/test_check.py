"""ftdfast.check: the per-module verdict against the float64 per-sample reference, and `ftdfast check`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.cli import main
from ftdfast.fisher import registry
from ftdfast.fisher.factors import PerSample

from tests.ruleless_modules import Gate


def gate_grad(module, call):
    x, g = call.args[0], call.grad
    s = torch.sigmoid(module.w)
    return (g * x * s * (1 - s)).reshape(x.shape[0], -1, x.shape[-1]).sum(1)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), Gate(), nn.Linear(4, 2)).eval()


def data(n=7):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_exact_model_gives_a_table_of_rules_and_fallbacks_and_leaves_the_model_alone(capsys):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    result = ftdfast.check(m, data(), samples=5)
    assert result.exact and result.samples == 5 and not result.wrong
    assert [(r.name, r.rule) for r in result.modules] == [
        ("0", "linear"), ("1", "layer_norm"), ("2", "fallback"), ("3", "linear")]
    assert all(r.max_error <= 1e-12 for r in result.modules)
    assert set(result.errors) == {k for k, _ in m.named_parameters()}
    out = capsys.readouterr().out
    assert "EXACT" in out and "fallback" in out and "time share" in out
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert next(m.parameters()).dtype == torch.float32


def test_a_wrong_rule_is_caught_and_named(monkeypatch):
    monkeypatch.setitem(registry._RULES, Gate, registry.Rule(
        lambda module, call: {"w": PerSample(2 * gate_grad(module, call))}, ))
    result = ftdfast.check(model(), data(), show=False)
    assert not result.exact
    assert result.wrong == ["2.w"]
    row = next(r for r in result.modules if r.name == "2")
    assert row.rule == "<lambda>" and row.max_error > 1e-3
    assert "NOT EXACT" in result.format() and "2.w" in result.format()


def test_a_rule_that_declines_is_reported_as_fallback(monkeypatch):
    def declines(module, call):
        return None

    monkeypatch.setitem(registry._RULES, Gate, registry.Rule(declines))
    result = ftdfast.check(model(), data(), show=False)
    assert result.exact
    assert next(r for r in result.modules if r.name == "2").rule == "fallback (declined by declines)"


def test_a_zero_fisher_where_the_reference_is_not_is_not_exact(monkeypatch):
    monkeypatch.setitem(registry._RULES, Gate, registry.Rule(
        lambda module, call: {"w": PerSample(0 * gate_grad(module, call))}))
    result = ftdfast.check(model(), data(), tolerance=1e9, show=False)
    assert not result.exact and result.wrong == ["2.w"]
    assert next(r for r in result.modules if r.name == "2").zeroed == ["2.w"]


def test_a_crash_of_the_fast_path_is_a_verdict_not_an_exception(monkeypatch):
    def broken(module, call):
        raise RuntimeError("boom")

    monkeypatch.setitem(registry._RULES, Gate, registry.Rule(broken))
    result = ftdfast.check(model(), data(), show=False)
    assert not result.exact and "RuntimeError: boom" in result.failure
    assert "the fast path raised RuntimeError: boom" in result.format()


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        ftdfast.check(model(), data(), samples=0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        ftdfast.check(lambda x: x, data())
    with pytest.raises(ValueError, match="empty"):
        ftdfast.check(model(), (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))


def test_cli_check_exit_code_says_whether_it_is_exact(tmp_path, monkeypatch, capsys):
    x = np.random.default_rng(0).normal(size=(6, 1, 6, 6)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(6) % 4)
    assert main(["check", "--model", "tests.cli_models:tiny_cnn", "--data", str(path), "--samples", "4"]) == 0
    assert "EXACT" in capsys.readouterr().out
    monkeypatch.setitem(registry._RULES, nn.Conv2d, registry.Rule(lambda module, call: {
        k: PerSample(torch.ones((call.args[0].shape[0],) + tuple(p.shape), dtype=p.dtype))
        for k, p in module.named_parameters()}))
    assert main(["check", "--model", "tests.cli_models:tiny_cnn", "--data", str(path)]) == 1
    assert "NOT EXACT" in capsys.readouterr().out
