"""Models wrapped by ``torch.compile``: the Fisher of the eager module, names without ``_orig_mod.``.

The compiled graph is never run by ``fisher_diagonal`` (its per-layer hooks would not fire,
and its backward with donated buffers cannot be taken twice), so several compiled models
in one process, used for training before or not, give the eager result. ``aot_eager``
goes through dynamo and AOTAutograd like the default inductor backend without the C++
code generation (minutes on a 2-core CPU); inductor was checked by hand the same way.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast


def mlp():
    return nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _vectors(g):
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def _images(g):
    return torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


# (id, model factory, data, trained with the compiled model before the Fisher)
CASES = [("mlp", mlp, _vectors, False), ("cnn", cnn, _images, False), ("mlp_trained_first", mlp, _vectors, True)]


@pytest.mark.slow  # dynamo + AOTAutograd for three models: 10-35 s on a busy 2-core CPU
def test_several_compiled_models_in_one_process_give_the_eager_result():
    for seed, (case, factory, data, train_first) in enumerate(CASES):
        torch.manual_seed(seed)
        model = factory().double()
        x, y = data(torch.Generator().manual_seed(seed))
        x = x.double()
        compiled = torch.compile(model, backend="aot_eager")
        if train_first:
            F.cross_entropy(compiled(x), y).backward()  # the compiled forward and backward ran once
        model.eval()
        want = ftdfast.fisher_diagonal(model, (x, y), progress=False)
        got = ftdfast.fisher_diagonal(compiled, (x, y), progress=False, batch_size=3)
        assert list(got) == list(want) == [k for k, _ in model.named_parameters()], case
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=0.0, msg=lambda m: f"{case} {k}: {m}")


def test_a_compiled_model_inside_data_parallel_is_unwrapped():
    model = mlp().double().eval()
    x, y = _vectors(torch.Generator().manual_seed(0))
    wrapped = nn.DataParallel(torch.compile(model, backend="aot_eager"))
    got = ftdfast.fisher_diagonal(wrapped, (x.double(), y), progress=False)
    assert list(got) == [k for k, _ in model.named_parameters()]
