"""LabeledData with known class counts; every pixel of sample i holds its id (train i, test 1000 + i)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ftdfast.data import LabeledData


def labels(counts: Sequence[int]) -> torch.Tensor:
    y = torch.cat([torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(len(y)))]  # interleaved


def make_data(train: Sequence[int], test: Sequence[int], classes: Optional[Sequence[str]] = None,
              shape=(1, 2, 3), name: str = "toy") -> LabeledData:
    y_train, y_test = labels(train), labels(test)
    x_train = torch.arange(len(y_train), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, *shape).contiguous()
    x_test = (1000 + torch.arange(len(y_test), dtype=torch.float32)).view(-1, 1, 1, 1).expand(-1, *shape).contiguous()
    classes = classes or tuple(f"c{k}" for k in range(len(train)))
    return LabeledData(name, x_train, y_train, x_test, y_test, classes, (0.0,) * shape[0], (1.0,) * shape[0])


def ids(x: torch.Tensor, test: bool = False) -> torch.Tensor:
    """Sample ids of a built split (indices into the LabeledData split)."""
    return x[:, 0, 0, 0].long() - (1000 if test else 0)
