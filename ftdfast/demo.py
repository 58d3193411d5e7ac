"""The built-in demo: a small CNN on scikit-learn's 8x8 digits (no download needed).

It trains the network briefly, then computes the exact diagonal empirical Fisher on
the held-out digits and prints the per-layer table.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .progress import progress_bar


def small_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A CPU-friendly CNN for 8x8 inputs: two 3x3 convs, max-pool, two Linear layers."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 16, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(32 * 4 * 4, 64)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(64, num_classes))]))


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Tuple[Tuple[torch.Tensor, torch.Tensor],
                                                                        Tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's 1,797 8x8 digits as ((x_train, y_train), (x_test, y_test)); x is (n, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("the demo needs scikit-learn for its built-in digits: pip install scikit-learn") from e
    d = _load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def train(model: nn.Module, data: Tuple[torch.Tensor, torch.Tensor], *, epochs: int = 3, batch_size: int = 64,
          lr: float = 1e-3, seed: int = 0, progress: bool = True) -> nn.Module:
    """A few epochs of Adam; returns the model in eval mode."""
    x, y = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    steps = epochs * ((len(y) + batch_size - 1) // batch_size)
    with progress_bar(total=steps, enabled=progress, desc="train", unit="step") as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), batch_size):
                idx = perm[i:i + batch_size]
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                bar.update(1)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = data
    return float((model(x).argmax(1) == y).float().mean())
