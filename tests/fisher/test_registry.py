"""The rule registry, the fallback and what fisher_diagonal promises about the user's model."""
import warnings

import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.fisher import fallback, registry
from ftdfast.fisher.factors import PerSample

from tests.ruleless_modules import Gate

from .problems import BY_ID


def model_with_gate():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), Gate(), nn.Linear(4, 2)).double().eval()


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (5,), generator=g)


def test_fallback_warns_once_naming_the_module_type(monkeypatch):
    monkeypatch.setattr(fallback, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ftdfast.fisher_diagonal(model_with_gate(), data(), progress=False)
        ftdfast.fisher_diagonal(model_with_gate(), data(), progress=False)
    msgs = [str(w.message) for w in caught if "no Fisher rule" in str(w.message)]
    assert len(msgs) == 1 and "Gate" in msgs[0]


def test_strict_refuses_modules_without_a_rule():
    with pytest.raises(TypeError, match=r"strict=True: no Fisher rule for module 1 of type Gate"):
        ftdfast.fisher_diagonal(model_with_gate(), data(), strict=True, progress=False)


def test_a_registered_rule_replaces_the_fallback(monkeypatch):
    calls = []

    def gate_rule(module, call):
        calls.append(1)
        x, g = call.args[0], call.grad
        s = torch.sigmoid(module.w)
        return {"w": PerSample((g * x * s * (1 - s)).reshape(x.shape[0], -1, x.shape[-1]).sum(1))}

    monkeypatch.setitem(registry._RULES, Gate, registry.Rule(gate_rule))
    model = model_with_gate()
    got = ftdfast.fisher_diagonal(model, data(), strict=True, progress=False)
    want = ftdfast.fisher_diagonal(model, data(), backend="loop", progress=False)
    assert calls
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-14)


def test_register_rule_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        ftdfast.register_rule(int)(lambda m, c: None)


def test_subclass_overriding_forward_gets_no_inherited_rule():
    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Plain(nn.Linear):
        pass

    assert registry.find_rule(Plain(2, 2)) is registry.find_rule(nn.Linear(2, 2))
    assert registry.find_rule(Doubled(2, 2)) is None


def test_overriding_subclass_is_still_correct_via_fallback():
    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    model = nn.Sequential(Doubled(3, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    got = ftdfast.fisher_diagonal(model, data(), progress=False)
    want = ftdfast.fisher_diagonal(model, data(), backend="loop", progress=False)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-14)


def test_frozen_parameters_are_left_out():
    model = model_with_gate()
    model[0].weight.requires_grad_(False)
    got = ftdfast.fisher_diagonal(model, data(), progress=False)
    assert "0.weight" not in got and "0.bias" in got
    want = ftdfast.fisher_diagonal(model, data(), backend="loop", progress=False)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize("backend", ["rules", "func", "loop", "legacy"])
def test_the_users_model_is_left_as_it_was(backend):
    model, x, y = BY_ID["batchnorm2d-eval"].build(torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(p.requires_grad, p.grad) for p in model.parameters()]
    hooks = [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()]
    ftdfast.fisher_diagonal(model, (x, y), backend=backend, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [(p.requires_grad, p.grad) for p in model.parameters()] == flags
    assert [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()] == hooks
    assert not model.training


def test_runs_under_no_grad():
    model, x, y = BY_ID["linear-2d"].build(torch.float64)
    want = ftdfast.fisher_diagonal(model, (x, y), progress=False)
    with torch.no_grad():
        got = ftdfast.fisher_diagonal(model, (x, y), progress=False)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_parameter_used_outside_its_module_is_refused():
    class Sneaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return nn.functional.linear(torch.tanh(self.a(x)), self.b.weight)

    with pytest.raises(RuntimeError, match=r"parameter b.weight reaches the loss without a call"):
        ftdfast.fisher_diagonal(Sneaky().double(), data(), progress=False)


def test_inplace_change_of_a_captured_input_is_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.g = Gate()
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            out = self.g(h)
            h.mul_(2)  # Gate's input, which Gate's backward does not save
            return self.b(out)

    with pytest.raises(RuntimeError, match="modified in place"):
        ftdfast.fisher_diagonal(Bad().double(), data(), progress=False)


def test_dataloader_and_iterables_give_the_same_result():
    model, x, y = BY_ID["conv2d-basic-odd"].build(torch.float64)
    ds = torch.utils.data.TensorDataset(x, y)
    a = ftdfast.fisher_diagonal(model, torch.utils.data.DataLoader(ds, batch_size=3), progress=False)
    b = ftdfast.fisher_diagonal(model, [(x[:4], y[:4]), (x[4:], y[4:])], progress=False)
    c = ftdfast.fisher_diagonal(model, (x.numpy(), y.numpy()), progress=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
        torch.testing.assert_close(a[k], c[k])


def test_max_samples_truncates():
    model, x, y = BY_ID["linear-2d"].build(torch.float64)
    got = ftdfast.fisher_diagonal(model, (x, y), max_samples=5, batch_size=2, progress=False)
    want = ftdfast.fisher_diagonal(model, (x[:5], y[:5]), progress=False)
    assert got.num_samples == 5
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_dict_and_tuple_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(2, 2)

        def forward(self, x, z):
            return self.a(x) + self.b(z)

    torch.manual_seed(0)
    model = TwoInputs().double()
    x, z = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    a = ftdfast.fisher_diagonal(model, [((x, z), y)], progress=False)
    b = ftdfast.fisher_diagonal(model, [({"x": x, "z": z}, y)], progress=False)
    c = ftdfast.fisher_diagonal(model, [((x, z), y)], backend="loop", progress=False)
    for k in c:
        torch.testing.assert_close(a[k], c[k])
        torch.testing.assert_close(b[k], c[k])


@pytest.mark.parametrize("needs_output", [False, True], ids=["shape-only", "needs-output"])
def test_rules_see_the_output_values_only_when_they_ask(monkeypatch, needs_output):
    """Without needs_output the pass does not hold module outputs (f+b frees them): meta stand-ins."""
    seen = []

    def gate_rule(module, call):
        seen.append(call.output)
        x, g = call.args[0], call.grad
        s = torch.sigmoid(module.w)
        return {"w": PerSample((g * x * s * (1 - s)).reshape(x.shape[0], -1, x.shape[-1]).sum(1))}

    monkeypatch.setitem(registry._RULES, Gate, registry.Rule(gate_rule, needs_output=needs_output))
    model, (x, y) = model_with_gate(), data()
    got = ftdfast.fisher_diagonal(model, (x, y), strict=True, progress=False)
    want = ftdfast.fisher_diagonal(model, (x, y), backend="loop", progress=False)
    torch.testing.assert_close(got["1.w"], want["1.w"], rtol=1e-9, atol=0)
    out = seen[0]
    assert out.shape == (5, 4) and out.dtype == torch.float64
    if needs_output:
        torch.testing.assert_close(out, model[1](model[0](x)))
    else:
        assert out.device.type == "meta"


def test_register_rule_needs_output_flag(monkeypatch):
    monkeypatch.setattr(registry, "_RULES", dict(registry._RULES))

    @ftdfast.register_rule(Gate, needs_output=True)
    def gate_rule(module, call):
        return None

    assert registry.find_rule(Gate()).needs_output


# ---- lazy rules (classes of libraries ftdfast does not import) ----

def _qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture
def lazy(monkeypatch):
    """An isolated copy of the lazy tables, so a test's rules do not leak."""
    import weakref
    monkeypatch.setattr(registry, "_RULES", dict(registry._RULES))
    monkeypatch.setattr(registry, "_LAZY_BY_NAME", dict(registry._LAZY_BY_NAME))
    monkeypatch.setattr(registry, "_PROVIDERS", list(registry._PROVIDERS))
    monkeypatch.setattr(registry, "_LAZY_MEMO", weakref.WeakKeyDictionary())
    return registry


def gate_lazy(module, call):
    return None


def test_a_lazy_rule_is_found_by_module_and_qualname(lazy):
    assert lazy.find_rule(Gate()) is None  # memoized negative ...
    lazy.register_lazy_rule(_qualname(Gate))(gate_lazy)  # ... forgotten when a rule is added
    assert lazy.find_rule(Gate()).name == "gate_lazy"


def test_a_lazy_rule_is_inherited_only_with_the_base_forward(lazy):
    class KeepsForward(Gate):
        pass

    class OwnForward(Gate):
        def forward(self, x):
            return 2 * super().forward(x)

    lazy.register_lazy_rule(_qualname(Gate))(gate_lazy)
    assert lazy.find_rule(KeepsForward()).name == "gate_lazy"
    assert lazy.find_rule(OwnForward()) is None


def test_a_provider_is_asked_once_per_class_never_for_eager_classes(lazy):
    asked = []

    def provider(cls):
        asked.append(cls)
        return lazy.Rule(gate_lazy) if cls is Gate else None

    lazy.register_rule_provider(provider)

    class Other(nn.Module):
        def forward(self, x):
            return x

    for _ in range(3):
        assert lazy.find_rule(Gate()).name == "gate_lazy"
        assert lazy.find_rule(Other()) is None
        assert lazy.find_rule(nn.Linear(2, 2)).name == "linear"
    assert sorted(c.__name__ for c in asked) == ["Gate", "Other"]


def test_an_eager_rule_wins_over_a_lazy_one(lazy):
    lazy.register_lazy_rule(_qualname(Gate))(gate_lazy)
    lazy.register_rule_provider(lambda cls: lazy.Rule(gate_lazy))

    @ftdfast.register_rule(Gate)
    def users_gate(module, call):
        return None

    assert lazy.find_rule(Gate()).name == "users_gate"


def test_a_failing_provider_warns_and_leaves_the_fallback(lazy):
    def broken(cls):
        raise RuntimeError("unknown library version")

    lazy.register_rule_provider(broken)
    with pytest.warns(UserWarning, match=r"provider 'broken' failed on .*Gate .*unknown library version"):
        assert lazy.find_rule(Gate()) is None


@pytest.mark.parametrize("bad,match", [
    (lambda r: r.register_lazy_rule(), "at least one class name"),
    (lambda r: r.register_lazy_rule(Gate), "'module.ClassName' strings"),
    (lambda r: r.register_lazy_rule("Gate"), "'module.ClassName' strings"),
    (lambda r: r.register_rule_provider("timm"), "callable cls -> Rule"),
], ids=["no-name", "a-class", "no-module", "provider-not-callable"])
def test_lazy_registration_rejects_bad_input(lazy, bad, match):
    with pytest.raises(TypeError, match=match):
        bad(lazy)(gate_lazy)


def test_a_provider_returning_a_non_rule_is_refused(lazy):
    lazy.register_rule_provider(lambda cls: gate_lazy)
    with pytest.raises(TypeError, match="must return a registry.Rule or None"):
        lazy.find_rule(Gate())
