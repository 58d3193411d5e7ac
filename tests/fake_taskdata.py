"""A stand-in for ftdfast.tasks.TaskData (same duck-typed fields) for tests of models, training and the cache."""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch


@dataclass(frozen=True)
class FakeTask:
    name: str
    classes: Optional[tuple] = None

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": None if self.classes is None else list(self.classes)}


@dataclass(frozen=True, eq=False)
class FakeTaskData:
    task: FakeTask
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: Optional[int]
    loss: str = "cross_entropy"

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


@lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


def digits(n_train: int = 1200, n_test: int = 400, name: str = "digits") -> FakeTaskData:
    """scikit-learn's 8x8 digits (1,797 images), 10 classes, normalized; a fixed shuffled split."""
    x, y = _digits()
    if n_train + n_test > len(y):
        raise ValueError(f"digits has {len(y)} images, asked for {n_train} + {n_test}")
    return FakeTaskData(FakeTask(name), x[:n_train], y[:n_train], x[n_train:n_train + n_test],
                        y[n_train:n_train + n_test], num_classes=10)


def random_classification(n_train=40, n_test=13, channels=3, size=9, num_classes=3, seed=0, name="random"):
    g = torch.Generator().manual_seed(seed)
    return FakeTaskData(FakeTask(name), torch.randn(n_train, channels, size, size, generator=g),
                        torch.randint(0, num_classes, (n_train,), generator=g),
                        torch.randn(n_test, channels, size, size, generator=g),
                        torch.randint(0, num_classes, (n_test,), generator=g), num_classes=num_classes)


def random_regression(n_train=24, n_test=7, channels=1, out_channels=2, size=8, seed=0, name="regress"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, channels, size, size, generator=g)
    y = torch.cat([x.mean(1, keepdim=True) * (i + 1) for i in range(out_channels)], 1)
    return FakeTaskData(FakeTask(name), x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=None,
                        loss="mse")


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: these tests use tiny tensors, for which thread start-up costs more than it saves
    (and a shared, busy machine makes multi-threaded tiny ops very slow)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
