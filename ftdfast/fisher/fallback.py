"""The torch.func fallback for modules without a Fisher rule.

For one call of the module, with captured inputs ``x`` and output gradient ``b``,
the per-sample gradient of the module's own parameters is

    G_n = d/dtheta < module(x_n; theta), b_n >

computed with ``torch.func.vmap(torch.func.grad(...))`` over chunks of samples, so
at most (chunk, P_module) numbers live at once. Sub-modules keep their own
parameters fixed (they have rules or fallbacks of their own), even where one is the
same tensor as a parameter of the module (BERT's MLM head owns ``bias``, which is
also its ``decoder.bias``): ``functional_call(..., tie_weights=False)`` swaps only the
module's own attribute, so each use is counted once, by the unit whose call makes it.

The batch dimension of the inputs is 0, or 1 for modules with ``batch_first=False``
(``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.Transformer*``) and for the hidden states of
recurrent modules (:func:`batch_dims`). The rules backend sends a call here only
when every such tensor carries the batch's n samples there; any other call (a
broadcast or folded batch) takes the exact path of :mod:`ftdfast.fisher.backends.exact`.

When asked (``track_sums``), the per-sample gradients are also summed over the
samples as they are computed, so that the caller can check them against the
module's gradient from the real autograd graph: a module that reads a cached
parameter-derived tensor (timm's LeViT ``attention_biases[:, idx]`` in eval mode)
bypasses ``functional_call`` and would otherwise give zeros.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from .factors import SampleFactor
from .eval_caches import clear_caches, find_caches
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


def batch_dims(module: nn.Module, leaves: Sequence) -> List[int]:
    """Where the sample dimension of each flattened input or output leaf of ``module`` must be.

    0, or 1 for ``batch_first=False`` modules; the hidden states of recurrent modules
    (every leaf after the first: ``h_0``/``h_n``, ``c_0``/``c_n``) are (layers, n, hidden).
    """
    bdim = _batch_dim(module)
    if isinstance(module, nn.RNNBase):
        return [bdim] + [1] * (len(leaves) - 1)
    return [bdim] * len(leaves)


class _FuncGrads:
    """Per-sample gradients of a module's own parameters for one call, computed chunk by chunk."""

    def __init__(self, module: nn.Module, call: Call, names: Sequence[str], n: int, track_sums: bool = False):
        self.module, self.names, self.n = module, list(names), n
        self.caches = find_caches(module)
        own = dict(module.named_parameters())  # names may be nested when a rule covering children declined
        self.params = {k: own[k].detach() for k in self.names}
        leaves, self.in_spec = tree_flatten((call.args, call.kwargs))
        self.in_leaves = leaves
        in_tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        dims = iter(batch_dims(module, in_tensors))
        self.in_dims = []
        for t in leaves:
            d = next(dims) if isinstance(t, torch.Tensor) else None
            self.in_dims.append(d if d is not None and t.dim() > d and t.shape[d] == n else None)
        grads = call.grad if isinstance(call.grad, tuple) else (call.grad,)
        out_dims = batch_dims(module, grads)
        self.out_pairs = [(i, g, out_dims[i]) for i, g in enumerate(grads) if g is not None]
        self._cache: Optional[tuple] = None
        self.use_vmap = True
        self.sums: Optional[Dict[str, torch.Tensor]] = {} if track_sums else None
        self._summed: set = set()

    def _loss(self, params, in_leaves, grads):
        args, kwargs = tree_unflatten([t.unsqueeze(d) if d is not None else t
                                       for t, d in zip(in_leaves, self.in_dims)], self.in_spec)
        clear_caches(self.caches)  # the swapped-in parameters, not a cached tensor of the real ones
        try:
            out = functional_call(self.module, params, args, kwargs, strict=False, tie_weights=False)
        finally:
            clear_caches(self.caches)  # nothing made inside vmap/grad outlives the call
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
        if self.sums is not None and (start, stop) not in self._summed:
            self._summed.add((start, stop))
            for k, g in result.items():
                part = g.sum(dim=0)
                self.sums[k] = part if k not in self.sums else self.sums[k] + part
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


class FuncGrad(SampleFactor):
    """A factor for one parameter of a fallback module (see :mod:`ftdfast.fisher.factors`).

    Its ``source`` computes the per-sample gradients of all the module's parameters
    together, one chunk of samples at a time.
    """

    def __init__(self, source: _FuncGrads, name: str):
        self.source, self.name = source, name
        self.shape = tuple(source.params[name].shape)
        self.dtype = source.params[name].dtype

    @property
    def n(self) -> int:
        return self.source.n

    def per_sample(self, start: int, stop: int) -> torch.Tensor:
        return self.source.chunk(start, stop)[self.name]


def fallback_factors(module: nn.Module, call: Call, names: List[str], n: int,
                     track_sums: bool = False) -> Dict[str, FuncGrad]:
    """Factors for the module's own parameters ``names`` from one call (``track_sums``: see the module doc)."""
    source = _FuncGrads(module, call, names, n, track_sums)
    return {k: FuncGrad(source, k) for k in names}
