"""Checks of a ``fisher_diagonal`` run that turn silent wrong answers into errors naming the fix.

- :func:`check_parameters`: parameters that hold no values (the meta device).
- :func:`check_deterministic`: a forward that randomizes its outputs although the model is in
  eval mode (functional dropout, ``F.dropout(x, training=True)``, or any other sampling in
  ``forward``): two identical forwards of the first batch's first samples must agree.
- :func:`check_finite_sums`: squared-gradient sums that overflowed (inf) or became NaN,
  checked after every batch with one reduction over the accumulators, so the error names
  the first batch and parameter where it happened.

:func:`checked_batches` runs the last two around the batch loop.
"""
from __future__ import annotations

import weakref
from typing import Callable, Dict, Iterable, Iterator

import torch
import torch.nn as nn

from .data import Batch, iter_tensors

# Samples of the first batch run twice by check_deterministic (two small forwards per call).
DETERMINISM_SAMPLES = 4
# Outputs that differ by more than this (relative to their largest magnitude) are random, not rounding:
# nondeterministic GPU reductions differ by ~1e-7 relative, dropout changes whole entries.
DETERMINISM_RTOL = 1e-4


def check_parameters(params: Dict[str, torch.Tensor]) -> None:
    """Refuse parameters on the meta device (shapes only, no values)."""
    meta = [name for name, p in params.items() if p.is_meta]
    if meta:
        raise ValueError(
            f"the model's parameters are on the meta device (shapes without values), e.g. {meta[0]!r}: "
            "materialize them first, e.g. model.to_empty(device='cpu') then load_state_dict(...), or build the "
            "model outside a torch.device('meta') context")


def _signature(model: nn.Module, part: Batch) -> tuple:
    """What the determinism verdict depends on: every module's training flag and the inputs' shapes, dtypes and
    devices (a forward may take another path for other shapes or in another mode)."""
    return (tuple(m.training for m in model.modules()),
            tuple((tuple(t.shape), t.dtype, t.device) for t in iter_tensors(part.inputs)))


# model -> the signatures whose two forwards agreed: the check runs once per model and signature, not per call
# (issue 26: on ResNet-18 it cost 3.8% of every call). Weak keys: a model that goes away takes its entry along.
_DETERMINISTIC: "weakref.WeakKeyDictionary[nn.Module, set]" = weakref.WeakKeyDictionary()


def check_deterministic(model: nn.Module, batch: Batch) -> None:
    """Two forwards of the batch's first samples must agree; else the forward randomizes (raise).

    Decided once per model and :func:`_signature` (modules' training flags, input shapes, dtypes and devices):
    a forward that agreed with itself is not run twice again for the same signature; one that did not raises
    every time.

    Run with the RNG state forked, so the caller's random stream is unchanged, and with gradients
    enabled: a module that fills an eval-mode cache from its parameters here (timm's attention
    biases) must keep the cached tensor's link to them, or their Fisher would come out as zero.
    A forward that fails here is left to the backend, whose error names the data's shapes.
    """
    part = batch.select(0, min(batch.n, DETERMINISM_SAMPLES))
    signature = _signature(model, part)
    seen = _DETERMINISTIC.get(model)
    if seen is not None and signature in seen:
        return
    devices = sorted({t.device.index or 0 for t in iter_tensors(part.inputs) if t.device.type == "cuda"})
    try:
        with torch.enable_grad(), torch.random.fork_rng(devices=devices):
            first, second = part.call(model), part.call(model)
    except Exception:  # noqa: BLE001 - the backend's own forward reports these (the data's shapes, the output)
        return
    if first.shape != second.shape or not first.is_floating_point():
        return
    first, second = first.detach(), second.detach()
    scale = first.detach().abs().max() if first.numel() else torch.zeros(())
    diff = (first - second).abs().max() if first.numel() else torch.zeros(())
    if bool(diff > DETERMINISM_RTOL * scale):
        raise ValueError(
            f"batch {batch.index}: two identical forwards of the model gave different outputs (max difference "
            f"{float(diff):.3g}, outputs up to {float(scale):.3g}): its forward is random although no nn.Dropout "
            "is in training mode, e.g. a functional F.dropout(x, p, training=True) or a sampling step. The Fisher "
            "needs a deterministic forward: pass training=self.training to functional dropout (and call "
            "model.eval()), or remove the randomness")
    _DETERMINISTIC.setdefault(model, set()).add(signature)


def check_finite_sums(sums: Dict[str, torch.Tensor], batch_index: int) -> None:
    """Raise ``FloatingPointError`` naming the parameter when an accumulated sum is NaN or infinite.

    One reduction over all accumulators (a single host sync); the per-parameter search runs only
    when that total is not finite.
    """
    if not sums:
        return
    total = torch.stack([v.sum(dtype=torch.float64) for v in sums.values()]).sum()
    if bool(torch.isfinite(total)):
        return
    for name, v in sums.items():
        if not bool(torch.isfinite(v).all()):
            dtype = str(v.dtype).replace("torch.", "")
            raise FloatingPointError(
                f"batch {batch_index}: the sum of squared gradients of parameter {name!r} is not finite "
                f"(inf or NaN in {dtype}): the gradients or their squares overflowed. Compute in float64 "
                "(model.double() with float64 inputs, and dtype=torch.float64), or rescale the inputs "
                "(e.g. standardize them) or the weights")
    raise FloatingPointError(
        f"batch {batch_index}: the sum of squared gradients over all parameters overflowed float64 (every "
        "parameter's own sum is finite); rescale the inputs or the weights")


def checked_batches(batches: Iterable[Batch], model: nn.Module,
                    sums: Callable[[], Dict[str, torch.Tensor]]) -> Iterator[Batch]:
    """Yield ``batches``; check the model's determinism on the first, and ``sums()`` after each is used.

    ``sums`` returns the accumulators the caller adds each batch into; they are checked when the
    caller asks for the next batch (and after the last), i.e. right after that batch's accumulation.
    """
    for i, batch in enumerate(batches):
        if i == 0:
            check_deterministic(model, batch)
        yield batch
        check_finite_sums(sums(), batch.index)
