"""Streaming ``(inputs, targets)`` batches out of whatever the user passes as ``data``.

Accepted forms:

- a tuple ``(X, y)`` of tensors or NumPy arrays with the sample index first;
  it is sliced into batches of ``batch_size`` (no copy of the whole set);
- a ``torch.utils.data.DataLoader`` or any iterable of ``(inputs, targets)``
  batches, used with the batching it already has.

``inputs`` may be a tensor, a tuple/list of tensors (the model is called as
``model(*inputs)``) or a dict (``model(**inputs)``); the batch size is
``len(targets)``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import torch


@dataclass
class Batch:
    """One batch, on the target device. ``n`` is the number of samples in it."""

    index: int
    inputs: Any
    targets: torch.Tensor
    n: int

    def call(self, model: torch.nn.Module) -> Any:
        """Run ``model`` on this batch's inputs."""
        if isinstance(self.inputs, dict):
            return model(**self.inputs)
        if isinstance(self.inputs, (tuple, list)):
            return model(*self.inputs)
        return model(self.inputs)

    def select(self, start: int, stop: int) -> "Batch":
        """Samples ``start:stop`` of this batch, as a batch of its own."""
        return Batch(self.index, map_tensors(self.inputs, lambda t: t[start:stop]),
                     self.targets[start:stop], stop - start)


def map_tensors(obj: Any, fn) -> Any:
    """Apply ``fn`` to every tensor in a (nested) tuple/list/dict."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from iter_tensors(v)


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        import numpy as np
        if isinstance(x, np.ndarray):
            return torch.from_numpy(x)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise TypeError(f"{what} must be a tensor or a NumPy array, got {type(x).__name__}")


def split_tuple(data: tuple) -> tuple:
    """``(inputs, targets, n)`` of a tuple ``(X, y)``, as tensors, checked: every input has n samples."""
    if len(data) != 2:
        raise ValueError(f"data as a tuple must be (inputs, targets), got a tuple of {len(data)} items")
    x, y = data
    x = map_tensors(x, lambda t: t) if isinstance(x, (dict, tuple, list)) else _as_tensor(x, "inputs")
    y = _as_tensor(y, "targets")
    n = y.shape[0] if y.dim() else 0
    for t in iter_tensors(x):
        if t.shape[0] != n:
            raise ValueError(f"inputs have {t.shape[0]} samples but targets have {n}; "
                             "pass (X, y) with the same first dimension")
    return x, y, n


def slice_tuple(data: tuple, start: int, stop: int) -> tuple:
    """Samples ``start:stop`` of a tuple ``(X, y)``, as a tuple of views (no copy)."""
    x, y, _ = split_tuple(data)
    return map_tensors(x, lambda t: t[start:stop]), y[start:stop]


def _tuple_batches(data: tuple, batch_size: int) -> Iterator[tuple]:
    x, y, n = split_tuple(data)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        yield map_tensors(x, lambda t: t[start:stop]), y[start:stop]


def num_samples_hint(data: Any) -> Optional[int]:
    """Total sample count when it is cheap to know (for the progress bar)."""
    if isinstance(data, tuple) and len(data) == 2:
        try:
            return len(data[1])
        except TypeError:
            return None
    dataset = getattr(data, "dataset", None)
    if dataset is not None:
        try:
            return len(dataset)
        except TypeError:
            return None
    return None


def check_count(value: Any, name: str, *, optional: bool = False) -> Optional[int]:
    """``value`` as an int >= 1 (None passes when ``optional``); else an error naming ``name``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "an int >= 1 or None" if optional else "an int >= 1"
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1{' or None' if optional else ''}, got {value}")
    return int(value)


def stream_batches(data: Any, *, batch_size: int, max_samples: Optional[int],
                   device: Optional[torch.device], check_finite: bool = True) -> Iterator[Batch]:
    """Yield :class:`Batch` objects on ``device``, stopping after ``max_samples`` samples."""
    batch_size = check_count(batch_size, "batch_size")
    max_samples = check_count(max_samples, "max_samples", optional=True)
    if isinstance(data, tuple):
        source: Iterable = _tuple_batches(data, batch_size)
    elif isinstance(data, (torch.Tensor, dict)) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"data must be a DataLoader, an iterable of (inputs, targets) batches or a tuple (X, y); "
            f"got {type(data).__name__}")
    else:
        source = data
    seen = 0
    for index, item in enumerate(source):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(
                f"batch {index}: expected an (inputs, targets) pair, got {type(item).__name__}"
                + (f" of {len(item)} items" if isinstance(item, (tuple, list)) else "")
                + "; wrap unlabeled data as (inputs, targets)")
        inputs, targets = item
        targets = _as_tensor(targets, f"batch {index} targets")
        if targets.dim() == 0:
            raise ValueError(f"batch {index}: targets must have a batch dimension, got a scalar")
        n = targets.shape[0]
        if max_samples is not None and seen + n > max_samples:
            keep = max_samples - seen
            inputs = map_tensors(inputs, lambda t: t[:keep])
            targets, n = targets[:keep], keep
        if n == 0:
            continue
        for t in iter_tensors(inputs):
            if t.shape[0] != n:
                raise ValueError(f"batch {index}: inputs have {t.shape[0]} samples but targets have {n}")
            # A sum is one cheap pass; only when it is not finite is the exact per-sample check run.
            if check_finite and t.is_floating_point() and not torch.isfinite(t.sum()) \
                    and not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t.reshape(n, -1))).any(dim=1).nonzero()[0, 0])
                raise FloatingPointError(
                    f"batch {index}: input sample {bad} of this batch has inf or nan values; "
                    "clean or drop it before computing the Fisher")
        if device is not None:
            inputs = map_tensors(inputs, lambda t: t.to(device, non_blocking=True))
            targets = targets.to(device, non_blocking=True)
        yield Batch(index, inputs, targets, n)
        seen += n
        if max_samples is not None and seen >= max_samples:
            return
