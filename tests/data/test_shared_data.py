"""Real data, when the project's shared folder is present (FTDFAST_SHARED_DATA or ../shared/datasets next to
the repository); skipped otherwise. The library itself never looks there."""
import os
from pathlib import Path

import pytest
import torch

from ftdfast.data import load_dataset
from ftdfast.tasks import paper_tasks


def _shared() -> Path:
    env = os.environ.get("FTDFAST_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _need(name: str) -> Path:
    if not (_shared() / name).is_file():
        pytest.skip(f"{_shared() / name} is absent (set FTDFAST_SHARED_DATA to a folder holding it)")
    return _shared()


def test_shared_mnist_npz():
    data = load_dataset("mnist", str(_need("mnist.npz")))
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.classes == tuple(str(i) for i in range(10))
    # the known MNIST statistics normalize the training set to about mean 0, std 1
    assert abs(float(data.x_train.mean())) < 0.01 and abs(float(data.x_train.std()) - 1) < 0.01
    t0 = paper_tasks("mnist", data)[0].build(data, seed=0)
    assert torch.bincount(t0.y_test).tolist() == [int((data.y_test == 0).sum())] * 2


def test_shared_cifar10_small_npz():
    data = load_dataset("cifar10", str(_need("cifar10-small.npz")))
    assert data.name == "cifar10" and data.input_shape == (3, 32, 32)
    assert torch.bincount(data.y_train).tolist() == [1000] * 10
    assert data.classes[1] == "automobile"
    td = paper_tasks("cifar10", data)[2].build(data, seed=0)
    assert torch.bincount(td.y_test).tolist() == [500] * 4
