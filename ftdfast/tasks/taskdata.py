"""``TaskData``: the tensors of one task, ready for training and for ``fisher_diagonal``."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch

from ..data.labeled import hash_tensor

LOSSES = ("cross_entropy", "mse")


@dataclass(frozen=True, eq=False)
class TaskData:
    """A built task: inputs, targets and the loss to train and measure the Fisher with.

    Attributes:
        task: the :class:`~ftdfast.tasks.Task` or :class:`~ftdfast.tasks.RegressionTask` it came from.
        x_train: (n, c, h, w) float32 inputs; x_test: (m, c, h, w).
        y_train, y_test: classification: (n,) int64 labels in [0, num_classes);
            regression: (n, c', h, w) float32 targets.
        num_classes: the label count, None for regression.
        loss: "cross_entropy" or "mse".
        source: the name of the dataset it was built from (informational).

    ``fisher_diagonal(model, td.test, loss=td.loss)`` measures the Fisher on the test split.
    """

    task: Any
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: Optional[int]
    loss: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not one of {LOSSES}")
        if (self.loss == "cross_entropy") != (self.num_classes is not None):
            raise ValueError("classification task data needs num_classes and loss='cross_entropy'; "
                             "regression task data needs num_classes=None and loss='mse'")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dim() != 4:
                raise ValueError(f"x_{split} must be (n, c, h, w), got shape {tuple(x.shape)}")
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError(f"x_{split} has {x.shape[0]} samples and y_{split} {y.shape[0]}; "
                                 "they must match and be at least 1")
            if self.num_classes is not None:
                if y.dim() != 1 or y.dtype != torch.int64:
                    raise ValueError(f"y_{split} must be int64 (n,), got {y.dtype} {tuple(y.shape)}")
                if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
                    raise ValueError(f"y_{split} has labels outside [0, {self.num_classes})")
            elif not y.is_floating_point():
                raise ValueError(f"regression y_{split} must be float, got {y.dtype}")
        if self.x_train.shape[1:] != self.x_test.shape[1:] or self.y_train.shape[1:] != self.y_test.shape[1:]:
            raise ValueError("train and test samples must have the same shapes")

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """(c, h, w)."""
        return tuple(self.x_train.shape[1:])

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """(num_classes,) for classification, (c', h, w) for regression."""
        return (self.num_classes,) if self.num_classes is not None else tuple(self.y_train.shape[1:])

    @property
    def train(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x_train, y_train)."""
        return self.x_train, self.y_train

    @property
    def test(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x_test, y_test), e.g. for ``fisher_diagonal(model, td.test, loss=td.loss)``."""
        return self.x_test, self.y_test

    def fingerprint(self) -> str:
        """Hex sha256 of the task's ``to_dict``, num_classes, loss and the four tensors; computed once."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            h.update(json.dumps([self.task.to_dict(), self.num_classes, self.loss], sort_keys=True).encode())
            for t in (self.x_train, self.y_train, self.x_test, self.y_test):
                hash_tensor(h, t)
            cached = h.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def __repr__(self) -> str:
        return (f"TaskData({self.task.name!r}, train={self.x_train.shape[0]}, test={self.x_test.shape[0]}, "
                f"input_shape={self.input_shape}, output_shape={self.output_shape}, loss={self.loss!r})")
