"""The torch.func fallback for modules without a Fisher rule.

For one call of the module, with captured inputs ``x`` and output gradient ``b``,
the per-sample gradient of the module's own parameters is

    G_n = d/dtheta < module(x_n; theta), b_n >

computed with ``torch.func.vmap(torch.func.grad(...))`` over chunks of samples, so
at most (chunk, P_module) numbers live at once. Sub-modules keep their own
parameters fixed (they have rules or fallbacks of their own).

The batch dimension of the inputs is 0, or 1 for modules with ``batch_first=False``
(``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.Transformer*``). The batch dimension of
each output is the first dimension of size n (the same as the inputs' when it fits).
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from .registry import Call

_WARNED: set = set()


def warn_fallback(module: nn.Module, declined: bool = False) -> None:
    """Warn once per module type that it goes to the torch.func fallback."""
    name = type(module).__qualname__
    if (name, declined) in _WARNED:
        return
    _WARNED.add((name, declined))
    what = (f"the Fisher rule for {name} does not cover this configuration" if declined
            else f"no Fisher rule for {name}")
    warnings.warn(
        f"ftdfast: {what}; its parameters use the torch.func fallback (per-sample "
        "gradients in chunks: slower). Register a rule with ftdfast.register_rule, or pass strict=True "
        "to make this an error.", stacklevel=4)


def _batch_dim(module: nn.Module) -> int:
    return 1 if getattr(module, "batch_first", True) is False else 0


def _out_dim(t: torch.Tensor, n: int, preferred: int) -> Optional[int]:
    if t.dim() > preferred and t.shape[preferred] == n:
        return preferred
    for d, s in enumerate(t.shape):
        if s == n:
            return d
    return None


class _FuncGrads:
    """Per-sample gradients of a module's own parameters for one call, computed chunk by chunk."""

    def __init__(self, module: nn.Module, call: Call, names: Sequence[str], n: int):
        self.module, self.names, self.n = module, list(names), n
        own = dict(module.named_parameters())  # names may be nested when a rule covering children declined
        self.params = {k: own[k].detach() for k in self.names}
        bdim = _batch_dim(module)
        leaves, self.in_spec = tree_flatten((call.args, call.kwargs))
        self.in_leaves = leaves
        self.in_dims = [bdim if isinstance(t, torch.Tensor) and t.dim() > bdim and t.shape[bdim] == n else None
                        for t in leaves]
        out_leaves, _ = tree_flatten(call.output)
        grads = call.grad if isinstance(call.grad, tuple) else (call.grad,)
        tensors = [t for t in out_leaves if isinstance(t, torch.Tensor)]
        self.out_pairs = [(i, g, _out_dim(g, n, bdim)) for i, g in enumerate(grads) if g is not None]
        self.num_out = len(tensors)
        self._cache: Optional[tuple] = None
        self.use_vmap = True

    def _loss(self, params, in_leaves, grads):
        args, kwargs = tree_unflatten([t.unsqueeze(d) if d is not None else t
                                       for t, d in zip(in_leaves, self.in_dims)], self.in_spec)
        out = functional_call(self.module, params, args, kwargs, strict=False)
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        total = 0
        for (i, _, d), g in zip(self.out_pairs, grads):
            total = total + (outs[i] * (g.unsqueeze(d) if d is not None else g)).sum()
        return total

    def chunk(self, start: int, stop: int) -> Dict[str, torch.Tensor]:
        if self._cache is not None and self._cache[0] == (start, stop):
            return self._cache[1]
        ins = [t.narrow(d, start, stop - start) if d is not None else t
               for t, d in zip(self.in_leaves, self.in_dims)]
        gs = [g.narrow(d, start, stop - start) if d is not None else g for _, g, d in self.out_pairs]
        g_dims = [d for _, _, d in self.out_pairs]
        result = None
        if self.use_vmap:
            try:
                with torch.enable_grad():
                    result = vmap(grad(self._loss), in_dims=(None, self.in_dims, g_dims))(self.params, ins, gs)
            except (RuntimeError, NotImplementedError):
                self.use_vmap = False  # e.g. cuDNN/fused RNN kernels have no batching rule
        if result is None:
            result = self._loop(ins, gs, g_dims, stop - start)
        self._cache = ((start, stop), result)
        return result

    def _loop(self, ins, gs, g_dims, count: int) -> Dict[str, torch.Tensor]:
        """The same per-sample gradients one sample at a time, for modules vmap cannot batch."""
        rows: Dict[str, list] = {k: [] for k in self.names}
        grad_fn = grad(self._loss)
        for k in range(count):
            ins_k = [t.select(d, k) if d is not None else t for t, d in zip(ins, self.in_dims)]
            gs_k = [g.select(d, k) if d is not None else g for g, d in zip(gs, g_dims)]
            with torch.enable_grad():
                g = grad_fn(self.params, ins_k, gs_k)
            for name in self.names:
                rows[name].append(g[name])
        return {name: torch.stack(v) for name, v in rows.items()}


class FuncGrad:
    """A factor for one parameter of a fallback module (see :mod:`ftdfast.fisher.factors`)."""

    def __init__(self, source: _FuncGrads, name: str):
        self.source, self.name = source, name
        self.shape = tuple(source.params[name].shape)
        self.dtype = source.params[name].dtype

    @property
    def n(self) -> int:
        return self.source.n

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        return self.source.chunk(start, stop)[self.name]


def fallback_factors(module: nn.Module, call: Call, names: List[str], n: int) -> Dict[str, FuncGrad]:
    """Factors for the module's own parameters ``names`` from one call."""
    source = _FuncGrads(module, call, names, n)
    return {k: FuncGrad(source, k) for k in names}
