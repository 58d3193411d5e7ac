"""fisher_diagonal on inputs that used to give silent wrong answers or unhelpful errors.

Each case: a readable id, the call, and either the exception type with a fragment of its
message (the problem and the fix), or a check that the right value comes back.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast
from ftdfast.native import _ext


def mlp(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype).eval()


def data(n=20, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=dtype) * scale, torch.randint(0, 3, (n,), generator=g)


def scaled_weights(factor):
    model = mlp()
    with torch.no_grad():
        model[0].weight.mul_(factor)
    return model


class FunctionalDropout(nn.Module):
    """Dropout written as a call: eval mode does not switch it off."""

    def __init__(self, training=True):
        super().__init__()
        self.fc, self.always = nn.Linear(5, 3), training

    def forward(self, x):
        return self.fc(F.dropout(x, 0.5, training=self.always or self.training))


def meta_model():
    with torch.device("meta"):
        return nn.Linear(5, 3)


def frequency_scaled(kind):
    torch.manual_seed(0)
    if kind == "embedding":  # (n, 3) ids -> (n, 3, 3) rows
        return nn.Sequential(nn.Embedding(7, 3, scale_grad_by_freq=True), nn.Flatten(), nn.Linear(9, 2)).eval()
    return nn.Sequential(nn.EmbeddingBag(7, 3, mode="sum", scale_grad_by_freq=True), nn.Linear(3, 2)).eval()


def ids(n=6):
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 7, (n, 3), generator=g), torch.randint(0, 2, (n,), generator=g)


def run(model, d, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 8)
    return ftdfast.fisher_diagonal(model, d, **kw)


OVERFLOW = "is not finite"
BACKENDS = ["rules", "func"] + (["native"] if _ext.HAS_NATIVE else [])

ERRORS = [
    # (id, call, exception type, message fragments)
    *[(f"inputs-1e30-float32-{b}", lambda b=b: run(mlp(), data(scale=1e30), backend=b, dtype=torch.float32),
       FloatingPointError, ["batch 0", "parameter '", OVERFLOW, "float64"]) for b in BACKENDS],
    ("inputs-1e30-float32-default-dtype", lambda: run(mlp(), data(scale=1e30)),
     FloatingPointError, ["batch 0", OVERFLOW, "rescale the inputs"]),
    ("weights-1e30-float32", lambda: run(scaled_weights(1e30), data(), dtype=torch.float32),
     FloatingPointError, [OVERFLOW, "parameter '"]),
    ("overflow-in-a-later-batch", lambda: run(mlp(), (torch.cat([data()[0][:16], data(scale=1e30)[0][:4]]),
                                                      data()[1]), dtype=torch.float32),
     FloatingPointError, ["batch 2", OVERFLOW]),
    ("functional-dropout", lambda: run(FunctionalDropout().eval(), data()),
     ValueError, ["two identical forwards", "training=self.training"]),
    *[(f"scale-grad-by-freq-{kind}-{b}", lambda kind=kind, b=b: run(frequency_scaled(kind), ids(), backend=b),
       ValueError, ["scale_grad_by_freq=True", "frequency in the whole mini-batch", "scale_grad_by_freq = False"])
      for kind in ("embedding", "embedding-bag") for b in BACKENDS + ["loop"]],
    ("meta-device-model", lambda: run(meta_model(), data()),
     ValueError, ["meta device", "to_empty"]),
    ("batch-size-float", lambda: run(mlp(), data(), batch_size=2.5),
     TypeError, ["batch_size must be an int >= 1", "2.5"]),
    ("batch-size-bool", lambda: run(mlp(), data(), batch_size=True), TypeError, ["batch_size must be an int"]),
    ("max-samples-float", lambda: run(mlp(), data(), max_samples=5.5),
     TypeError, ["max_samples must be an int >= 1 or None", "5.5"]),
    ("max-samples-zero", lambda: run(mlp(), data(), max_samples=0), ValueError, ["max_samples must be >= 1"]),
    ("normalize-nan-trace", lambda: ftdfast.FisherDiagonal({"w": torch.tensor([float("nan"), 1.0])}, 1).normalized(),
     ValueError, ["not finite"]),
    ("normalize-inf-trace", lambda: ftdfast.FisherDiagonal({"w": torch.tensor([float("inf"), 1.0])}, 1).normalized(),
     ValueError, ["not finite"]),
]


@pytest.mark.parametrize("call,error,fragments", [pytest.param(*c[1:], id=c[0]) for c in ERRORS])
def test_fault_raises_a_clear_error(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "all zeros" not in str(info.value)


def test_nan_normalized_is_not_called_all_zeros_but_zeros_still_are():
    with pytest.raises(ValueError, match="all zeros"):
        ftdfast.FisherDiagonal({"w": torch.zeros(2)}, 1).normalized()


# ------------------------------------------------------------------ correct values, no false alarms
def _loop_reference(model, d):
    return run(model.double(), (d[0].double(), d[1]), backend="loop")


def test_large_inputs_in_float64_are_finite_and_match_the_loop():
    """1e30 inputs overflow float32 squares, not float64 ones: the error's advice works."""
    model, d = mlp(torch.float64), data(dtype=torch.float64, scale=1e30)
    got, ref = run(model, d), _loop_reference(mlp(), d)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-10, atol=0)
    assert math.isfinite(got.trace()) and got.trace() > 1e59


@pytest.mark.parametrize("model", [
    pytest.param(lambda: FunctionalDropout(training=False).eval(), id="functional-dropout-following-eval"),
    pytest.param(lambda: nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3)).eval(),
                 id="dropout-module-in-eval"),
])
def test_deterministic_forwards_pass_the_check(model):
    f = run(model(), data())
    assert f.num_samples == 20 and f.trace() > 0


class CountingForwards(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.calls = nn.Linear(5, 3), 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x)


def test_the_determinism_check_runs_once_per_model_and_signature():
    """Its two extra forwards are paid once per (model, modes, input shapes), not on every call (issue 26)."""
    from ftdfast.fisher.checks import check_deterministic
    from ftdfast.fisher.data import Batch
    model, (x, y) = CountingForwards().eval(), data()
    check_deterministic(model, Batch(0, x, y, len(y)))
    assert model.calls == 2
    check_deterministic(model, Batch(1, x, y, len(y)))
    assert model.calls == 2                                    # decided
    check_deterministic(model, Batch(0, x[:, None], y, len(y)))
    assert model.calls == 4                                    # other input shapes: checked again
    model.train()
    check_deterministic(model, Batch(0, x, y, len(y)))
    assert model.calls == 6                                    # another mode: checked again
    fresh = CountingForwards().eval()
    run(fresh, (x, y), batch_size=20)
    once = fresh.calls
    run(fresh, (x, y), batch_size=20)
    assert fresh.calls - once < once - 1                       # the second call skips the check's two forwards


def test_a_random_forward_is_refused_on_every_call():
    model = FunctionalDropout()
    for _ in range(2):
        with pytest.raises(ValueError, match="two identical forwards"):
            run(model, data())


def test_the_determinism_check_leaves_the_random_stream_alone():
    model, d = mlp(), data()
    torch.manual_seed(123)
    run(model, d)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))


def test_scale_grad_by_freq_is_the_squared_batch_gradient_under_legacy():
    """legacy squares the mini-batch gradient, which scale_grad_by_freq defines: no refusal there."""
    model, (x, y) = frequency_scaled("embedding"), ids()
    f = run(model, (x, y), backend="legacy", batch_size=6)
    F.cross_entropy(model(x), y).backward()
    squared = model[0].weight.grad ** 2  # legacy then averages over the first dimension, as the authors do
    want = squared.mean(0, keepdim=True).expand_as(squared).double()
    torch.testing.assert_close(f["0.weight"], want, rtol=1e-5, atol=0)


def test_numpy_integers_are_counts():
    import numpy as np
    f = run(mlp(), data(), batch_size=np.int64(7), max_samples=np.int32(9))
    assert f.num_samples == 9
