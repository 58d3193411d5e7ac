"""Streaming ``(inputs, targets)`` batches out of whatever the user passes as ``data``.

Accepted forms:

- a tuple ``(X, y)`` of tensors or NumPy arrays with the sample index first;
  it is sliced into batches of ``batch_size`` (no copy of the whole set);
- a ``torch.utils.data.DataLoader`` or any iterable of batches, used with the
  batching it already has. A batch is one of:

  - a pair ``(inputs, targets)``;
  - a mapping (a dict, a Hugging Face ``BatchEncoding``, what HF collators return):
    its targets are the value under the key ``targets`` names (default
    ``"labels"``), every other entry is a keyword input of the model
    (``model(**inputs)``); the targets' key is left out, so a Hugging Face model
    does not compute a loss of its own;
  - a tuple/list of more than two items (a ``TensorDataset`` of several tensors):
    ``targets`` must name the position of the targets (e.g. ``targets=-1``); the
    other items, in order, are the model's positional inputs.

``inputs`` may be a tensor, a tuple/list of tensors (the model is called as
``model(*inputs)``) or a mapping (``model(**inputs)``); the batch size is
``len(targets)``. The model's output is one tensor (n, *out) or an object with a
``.logits`` tensor (a Hugging Face ``ModelOutput``): :func:`output_tensor`.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Union

import torch

# Where a batch keeps its targets: a key of mapping batches or a position in tuple/list batches.
TargetsArg = Optional[Union[str, int]]
DEFAULT_TARGETS_KEY = "labels"  # Hugging Face's name, what its collators and datasets use


class ModelOutputError(TypeError):
    """The model returned neither a tensor nor an output with a ``.logits`` tensor."""


def output_tensor(out: Any) -> torch.Tensor:
    """The tensor z (n, *out) of a model's output: the output itself, or its ``.logits`` (HF ``ModelOutput``).

    Anything else raises :class:`ModelOutputError` naming what the model returned.
    """
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if isinstance(logits, torch.Tensor):
        return logits
    what = type(out).__name__
    if isinstance(out, Mapping):
        what += f" with keys {sorted(out.keys())}"
    elif isinstance(out, (tuple, list)):
        what += f" of {len(out)} items"
    raise ModelOutputError(
        f"the model returned {what}; fisher_diagonal needs one tensor of outputs (n, *out) or an output with a "
        ".logits tensor (a Hugging Face ModelOutput). Use a model with a head (e.g. ...ForCausalLM, "
        "...ForSequenceClassification), or wrap it in a small nn.Module whose forward returns the output tensor")


@dataclass
class Batch:
    """One batch, on the target device. ``n`` is the number of samples in it."""

    index: int
    inputs: Any
    targets: torch.Tensor
    n: int

    def call(self, model: torch.nn.Module) -> torch.Tensor:
        """Run ``model`` on this batch's inputs; its output tensor z (n, *out) (see :func:`output_tensor`)."""
        if isinstance(self.inputs, Mapping):
            out = model(**self.inputs)
        elif isinstance(self.inputs, (tuple, list)):
            out = model(*self.inputs)
        else:
            out = model(self.inputs)
        return output_tensor(out)

    def select(self, start: int, stop: int) -> "Batch":
        """Samples ``start:stop`` of this batch, as a batch of its own."""
        return Batch(self.index, map_tensors(self.inputs, lambda t: t[start:stop]),
                     self.targets[start:stop], stop - start)


def map_tensors(obj: Any, fn) -> Any:
    """Apply ``fn`` to every tensor in a (nested) tuple/list/dict."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
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
    x = map_tensors(x, lambda t: t) if isinstance(x, (Mapping, tuple, list)) else _as_tensor(x, "inputs")
    y = _as_tensor(y, "targets")
    n = y.shape[0] if y.dim() else 0
    for t in iter_tensors(x):
        if t.shape[0] != n:
            raise ValueError(f"inputs have {t.shape[0]} samples but targets have {n}; "
                             "pass (X, y) with the same first dimension")
    return x, y, n


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


def check_targets_arg(targets: TargetsArg) -> None:
    """Refuse a ``targets`` option that is neither None, a key (str) nor a position (int)."""
    if targets is not None and (isinstance(targets, bool) or not isinstance(targets, (str, numbers.Integral))):
        raise TypeError(f"targets must be a key of mapping batches (str), a position in tuple batches (int) or "
                        f"None, got {targets!r} ({type(targets).__name__})")


def split_batch(item: Any, index: int, targets: TargetsArg = None) -> tuple:
    """``(inputs, targets)`` of one batch as it comes from the data (see the module docs for the forms)."""
    if isinstance(item, Mapping):
        if targets is not None and not isinstance(targets, str):
            raise TypeError(f"batch {index} is a mapping (keys {sorted(item.keys())}) but targets={targets!r} is a "
                            "position; pass the key that holds the targets, e.g. targets='labels'")
        key = DEFAULT_TARGETS_KEY if targets is None else targets
        if key not in item:
            raise ValueError(
                f"batch {index} is a mapping with keys {sorted(item.keys())} and no {key!r}: pass "
                "targets='<key>' naming the key that holds the targets, or add them to the batch (for a causal LM, "
                "labels = input_ids with padding set to -100, as DataCollatorForLanguageModeling(tokenizer, "
                "mlm=False) does)")
        return {k: v for k, v in item.items() if k != key}, item[key]
    if isinstance(item, (tuple, list)):
        if isinstance(targets, str):
            raise TypeError(f"batch {index} is a {type(item).__name__} of {len(item)} items but targets={targets!r} "
                            "is a key; pass the targets' position (e.g. targets=-1) or leave targets=None for "
                            "(inputs, targets) pairs")
        if targets is None:
            if len(item) == 2:
                return item[0], item[1]
            raise ValueError(
                f"batch {index}: expected an (inputs, targets) pair, got a {type(item).__name__} of {len(item)} "
                "items; pass targets=<position> to say which item holds the targets (e.g. targets=-1: the last; "
                "the others are the model's inputs, in order)")
        if not -len(item) <= targets < len(item):
            raise ValueError(f"batch {index}: targets={targets} is not a position in a {type(item).__name__} of "
                             f"{len(item)} items")
        k = targets % len(item)
        rest = [v for i, v in enumerate(item) if i != k]
        return (rest[0] if len(rest) == 1 else tuple(rest)), item[k]
    raise ValueError(
        f"batch {index}: expected an (inputs, targets) pair or a mapping with the targets under a key, got "
        f"{type(item).__name__}; wrap unlabeled data as (inputs, targets)")


def stream_batches(data: Any, *, batch_size: int, max_samples: Optional[int],
                   device: Optional[torch.device], check_finite: bool = True,
                   targets: TargetsArg = None) -> Iterator[Batch]:
    """Yield :class:`Batch` objects on ``device``, stopping after ``max_samples`` samples.

    ``targets``: where each batch keeps its targets (see the module docs); None: the
    second item of a pair, the key ``"labels"`` of a mapping.
    """
    check_targets_arg(targets)
    batch_size = check_count(batch_size, "batch_size")
    max_samples = check_count(max_samples, "max_samples", optional=True)
    if isinstance(data, tuple):
        source: Iterable = _tuple_batches(data, batch_size)
    elif isinstance(data, (torch.Tensor, Mapping)) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"data must be a DataLoader, an iterable of batches ((inputs, targets) pairs or mappings) or a "
            f"tuple (X, y); got {type(data).__name__}" + (" (a single batch? pass it in a list: [batch])"
                                                         if isinstance(data, Mapping) else ""))
    else:
        source = data
    seen = 0
    for index, item in enumerate(source):
        inputs, y = split_batch(item, index, targets)
        y = _as_tensor(y, f"batch {index} targets")
        if y.dim() == 0:
            raise ValueError(f"batch {index}: targets must have a batch dimension, got a scalar")
        n = y.shape[0]
        if max_samples is not None and seen + n > max_samples:
            keep = max_samples - seen
            inputs = map_tensors(inputs, lambda t: t[:keep])
            y, n = y[:keep], keep
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
            y = y.to(device, non_blocking=True)
        yield Batch(index, inputs, y, n)
        seen += n
        if max_samples is not None and seen >= max_samples:
            return
