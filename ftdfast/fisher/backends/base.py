"""What every backend shares: the table of trainable parameters, the accumulators and the forward call."""
from __future__ import annotations

import sys
from functools import partial
from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn

from ..eval_caches import clear_caches, find_caches
from ..data import Batch, ModelOutputError
from ..losses import FISHER_KINDS

GradsFor = Callable[[torch.Tensor], Iterable[torch.Tensor]]


class ReentrantCheckpointError(RuntimeError):
    """A module of the model runs inside ``torch.utils.checkpoint(..., use_reentrant=True)``."""


def _reentrant_checkpoint_code():
    """The code of torch's reentrant checkpoint forward (its frame is on the stack while the checkpointed part runs)."""
    from torch.utils import checkpoint
    fn = getattr(getattr(checkpoint, "CheckpointFunction", None), "forward", None)
    return getattr(fn, "__code__", None)


def _inside(code) -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def refuse_reentrant_checkpoint(name: str, module: nn.Module, args) -> None:
    """A forward pre-hook: raise when ``module`` runs under a reentrant ``torch.utils.checkpoint``.

    That checkpoint runs its part of the forward without gradients and recomputes it in a
    backward that only ``loss.backward()`` supports: ``torch.autograd.grad`` (which every
    backend takes, per sample or per batch) fails there, and where no input of the part
    requires grad its parameters silently get no gradient at all.
    """
    if torch.is_grad_enabled():
        return
    code = _reentrant_checkpoint_code()
    if code is not None and _inside(code):
        raise ReentrantCheckpointError(
            f"module {name or '<model>'} ({type(module).__qualname__}) runs inside torch.utils.checkpoint with "
            "use_reentrant=True, whose backward supports only loss.backward(): the per-sample gradients "
            "ftdfast takes with torch.autograd.grad fail there, or come out as 0 when no input of the "
            "checkpointed part requires grad. Use use_reentrant=False (checkpoint(fn, *args, "
            "use_reentrant=False); for a transformers model model.gradient_checkpointing_enable("
            "gradient_checkpointing_kwargs={'use_reentrant': False})): the same values, and it works")


class ParamTable:
    """The model's trainable parameters by name (shared parameters appear once, under their first name)."""

    def __init__(self, model: nn.Module):
        self.params: Dict[str, nn.Parameter] = {
            name: p for name, p in model.named_parameters() if p.requires_grad}
        self._by_id = {id(p): name for name, p in self.params.items()}

    def name_of(self, p: torch.Tensor) -> Optional[str]:
        return self._by_id.get(id(p))


def describe_inputs(batch: Batch) -> str:
    from ..data import iter_tensors
    shapes = [tuple(t.shape) for t in iter_tensors(batch.inputs)]
    return ", ".join(str(s) for s in shapes) or "no tensors"


class Backend:
    """Accumulates ``sum_n sum_k (d <z_n, v_kn> / d theta)^2`` per parameter into ``self.acc``.

    Class attributes say what a backend supports, so that the API needs no special cases:
    ``fisher_kinds`` (the ``fisher=`` values it computes), ``distributed`` (its sums
    may be added over the ranks of a data-parallel job) and ``per_sample`` (it squares
    per-sample gradients, so modules whose backward depends on the whole batch are refused).
    """

    name = "base"
    fisher_kinds = FISHER_KINDS
    distributed = True
    per_sample = True

    def __init__(self, model: nn.Module, table: ParamTable):
        self.model, self.table = model, table
        self.acc: Dict[str, torch.Tensor] = {}
        self.caches = find_caches(model)  # eval-mode parameter caches, emptied before each graph (see eval_caches.py)
        self._checkpoint_checked = False  # the first forward with gradients looks for a reentrant checkpoint

    def start(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.acc = {}

    def add(self, name: str, s: torch.Tensor) -> None:
        """Add a batch's sum of squares for parameter ``name`` into its accumulator (dtype ``self.dtype``).

        ``s`` is handed over: a batch sum made for this call (never a tensor someone else
        holds), so the first one becomes the accumulator without a copy where its dtype is
        already ``self.dtype``.
        """
        acc = self.acc.get(name)
        if acc is None:
            self.acc[name] = s if s.dtype == self.dtype and s.is_contiguous() else s.to(
                self.dtype, memory_format=torch.contiguous_format, copy=True)
        else:
            acc.add_(s)

    def totals(self) -> Dict[str, torch.Tensor]:
        """The accumulated sums per parameter, zeros where no gradient ever arrived."""
        return {name: self.acc[name] if name in self.acc else torch.zeros(p.shape, dtype=self.dtype, device=p.device)
                for name, p in self.table.params.items()}

    def finish(self, totals: Dict[str, torch.Tensor], num_samples: int) -> Dict[str, torch.Tensor]:
        """The result from the (all-reduced) sums of :meth:`totals` over ``num_samples`` samples: their mean."""
        return {k: v.div_(num_samples) for k, v in totals.items()}

    def forward(self, batch: Batch, model: Optional[nn.Module] = None) -> torch.Tensor:
        """The model's output tensor z (n, *out) on ``batch``; a shape mismatch becomes an error naming the data's shape."""
        model = self.model if model is None else model
        handles = []
        if torch.is_grad_enabled():
            clear_caches(self.caches)  # a cached parameter-derived tensor would hide its parameter from autograd
            if not self._checkpoint_checked:
                self._checkpoint_checked = True
                handles = [m.register_forward_pre_hook(partial(refuse_reentrant_checkpoint, name))
                           for name, m in self.model.named_modules()
                           if any(p.requires_grad for p in m.parameters(recurse=False))]
        try:
            out = batch.call(model)
        except (ModelOutputError, ReentrantCheckpointError):
            raise  # it ran; what it returned, or how it checkpoints, is the problem, and the error says so
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise ValueError(
                f"batch {batch.index}: the model could not run on inputs of shape {describe_inputs(batch)}: {e}. "
                "Check that the data's shape and dtype match what the model expects") from e
        finally:
            for h in handles:
                h.remove()
        if torch.is_grad_enabled() and not out.requires_grad:
            raise ValueError(
                "the model's output does not depend on any trainable parameter; check requires_grad on "
                "the parameters and that the model is not run under torch.no_grad inside its forward")
        return out

    def accumulate(self, batch: Batch, grads_for: GradsFor) -> None:  # pragma: no cover - interface
        raise NotImplementedError
