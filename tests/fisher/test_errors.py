"""Bad input gets an error that names the problem (and the fix where there is one)."""
import pytest
import torch
import torch.nn as nn

import ftdfast


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).eval()


def data(n=6):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def run(model, d, **kw):
    kw.setdefault("progress", False)
    return ftdfast.fisher_diagonal(model, d, **kw)


@pytest.mark.parametrize("empty", [
    pytest.param((torch.empty(0, 4), torch.empty(0, dtype=torch.long)), id="empty-tuple"),
    pytest.param([], id="empty-iterable"),
    pytest.param(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.empty(0, 4),
                                                                            torch.empty(0, dtype=torch.long)),
                                             batch_size=2), id="empty-loader"),
])
def test_empty_data(empty):
    with pytest.raises(ValueError, match="data is empty"):
        run(mlp(), empty)


def test_non_finite_input_names_the_batch():
    x, y = data(9)
    x[7, 2] = float("nan")
    with pytest.raises(FloatingPointError, match=r"batch 1: input sample 3"):
        run(mlp(), (x, y), batch_size=4)


def test_non_finite_loss_names_the_batch():
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"batch 0: the loss of sample \d+ .* not finite"):
        run(model, data())


@pytest.mark.parametrize("bad", [3, -1])
def test_label_outside_output_range(bad):
    x, y = data()
    y[4] = bad
    with pytest.raises(ValueError, match=rf"label {bad} is outside the model's output range \[0, 3\)"):
        run(mlp(), (x, y))


def test_no_trainable_parameters():
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        run(model, data())


def test_shape_mismatch_between_model_and_data():
    with pytest.raises(ValueError, match=r"could not run on inputs of shape \(6, 7\)"):
        run(mlp(), (torch.randn(6, 7), torch.zeros(6, dtype=torch.long)))


def test_sample_count_mismatch():
    with pytest.raises(ValueError, match="inputs have 5 samples but targets have 6"):
        run(mlp(), (torch.randn(5, 4), torch.zeros(6, dtype=torch.long)))


def test_batchnorm_in_training_mode_says_call_eval():
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d\) is in training mode.*model\.eval\(\)"):
        run(model, data())
    assert model.training  # never changed behind the user's back


def test_batchnorm_without_running_stats_is_refused():
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.Linear(5, 3)).eval()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        run(model, data())


def test_dropout_in_training_mode_says_call_eval():
    model = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.5), nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"dropout.*model\.eval\(\)"):
        run(model, data())


def test_targets_shape_for_mse():
    with pytest.raises(ValueError, match=r"mse needs targets of the output's shape \(6, 3\)"):
        run(mlp(), (data()[0], torch.randn(6, 2)), loss="mse")


def test_callable_loss_must_be_per_sample():
    with pytest.raises(ValueError, match=r"one loss per sample, shape \(6,\)"):
        run(mlp(), data(), loss=lambda out, y: nn.functional.cross_entropy(out, y))


def test_callable_loss_cannot_be_exact():
    with pytest.raises(ValueError, match="known distribution"):
        run(mlp(), data(), loss=lambda out, y: nn.functional.cross_entropy(out, y, reduction="none"),
            fisher="exact")


@pytest.mark.parametrize("kw,match", [
    (dict(loss="hinge"), "loss='hinge' is not one of"),
    (dict(fisher="true"), "fisher='true' is not one of"),
    (dict(backend="gpu"), "backend='gpu' is not one of"),
    (dict(fisher="mc", mc_samples=0), "mc_samples must be a positive integer"),
    (dict(dtype=torch.int64), "dtype must be a floating"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(backend="legacy", fisher="exact"), "legacy"),
])
def test_bad_options(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run(mlp(), data(), **kw)


def test_batch_that_is_not_a_pair():
    with pytest.raises(ValueError, match=r"batch 0: expected an \(inputs, targets\) pair"):
        run(mlp(), [torch.randn(3, 4)])


def test_model_returning_a_tuple():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(TypeError, match="returned tuple"):
        run(Pair(), data())


def test_native_backend_without_extension_names_the_build_command(monkeypatch):
    from ftdfast.native import _ext
    monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation"):
        run(mlp(), data(), backend="native")
