"""Where a module's rows are the batch's samples: the per-call shape check and the two-sample probe.

A per-layer rule (or the torch.func fallback) assumes that row n of its module's
input and output, on the batch dimension (:func:`ftdfast.fisher.fallback.batch_dims`),
is sample n. :func:`unbatched` checks the sizes on every call. :func:`probe` checks
the rows once: samples 0 and 1 run alone, a random output gradient goes to sample 1
only, and every hooked output must then have an exactly zero gradient in row 0. That
catches a dimension whose size equals N by chance (T5's (q, k) bucket ids with q == N).

A unit whose one output has size 1 there (GPT-2 ``wpe(arange(T)[None])``, broadcast
afterwards) is tried once more with its output and inputs expanded to the samples
(:func:`expand_call`, views): if the model's output is unchanged and the expanded rows
pass the same row test, the rules backend expands that unit's output in every batch,
and its rule applies as to any batched call.
"""
from __future__ import annotations

import weakref
from functools import partial
from typing import Dict, List, Optional, Set, Tuple

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten, tree_map

from ..data import iter_tensors
from ..fallback import batch_dims

# model -> {probe key: (global parameter name -> why it takes the exact path, names of units to expand)}
_VERDICTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def unbatched(module: nn.Module, inputs, leaves, live, n: int) -> Optional[str]:
    """None when the call carries the batch's n samples on its batch dimension, else what is wrong.

    Checked: every live output (``leaves[i]`` for i in ``live``), every input that
    requires grad, and the first input (token ids, images).
    """
    out_dims = batch_dims(module, leaves)
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    in_dims = batch_dims(module, tensors)
    checks = [(f"output {i}", leaves[i], out_dims[i]) for i in live]
    checks += [(f"input {j}", t, d) for j, (t, d) in enumerate(zip(tensors, in_dims)) if j == 0 or t.requires_grad]
    for what, t, d in checks:
        if t.dim() <= d or t.shape[d] != n:
            return (f"its {what} has shape {tuple(t.shape)}, without the {n} samples on dimension "
                    f"{d} (computed once and broadcast, or the batch folded with another dimension)")
    return None


def expand_call(module: nn.Module, args, kwargs, output, n: int):
    """The call with its single output, and every input of size 1 on the batch dimension, expanded to n samples.

    None where the output is not one tensor of size 1 there. Views: nothing is copied.
    """
    if not isinstance(output, torch.Tensor):
        return None
    d = batch_dims(module, [output])[0]
    if output.dim() <= d or output.shape[d] != 1:
        return None

    def grow(t):
        if isinstance(t, torch.Tensor) and t.dim() > d and t.shape[d] == 1:
            return t.expand(tuple(t.shape[:d]) + (n,) + tuple(t.shape[d + 1:]))
        return t
    return tree_map(grow, args), tree_map(grow, kwargs), grow(output)


def probe_key(backend, batch) -> tuple:
    """What a verdict depends on: the units (modules, parameters, training flags) and the inputs' per-sample shapes."""
    inputs = tuple((tuple(t.shape[1:]), t.dtype, t.device.type) for t in iter_tensors(batch.inputs))
    units = tuple((u.name, id(u.module), type(u.module), tuple(u.params.values()), u.module.training)
                  for u in backend.units)
    return inputs, units, tuple(id(p) for p in backend.table.params.values())


def probe(backend, batch, key) -> Tuple[Dict[str, str], Set[str]]:
    """(parameters that must take the exact path -> why, names of units to expand), remembered per model and key.

    Cost: two forwards and backwards of two samples (three with a broadcast unit), once
    per model and key in a process.
    """
    try:
        known = _VERDICTS.setdefault(backend.model, {})
    except TypeError:  # a model that cannot be weakly referenced: no memory of earlier calls
        known = {}
    if key not in known:
        known[key] = _probe_now(backend, batch)
    exact, expand = known[key]
    return dict(exact), set(expand)


def _probe_now(backend, batch) -> Tuple[Dict[str, str], Set[str]]:
    first, out1 = _probe_pass(backend, batch, set())
    candidates = {id(u) for u, why, pairs, _ in first
                  if why is not None and len(pairs) == 1 and pairs[0][0].shape[pairs[0][1]] == 1}
    verdict = {id(u): (u, why) for u, why, _, _ in first}
    expand: Set[str] = set()
    if candidates:
        second, out2 = _probe_pass(backend, batch, candidates)
        same = out2.shape == out1.shape and torch.allclose(
            out2, out1, rtol=1e-6, atol=1e-6 * float(out1.abs().max().clamp_min(1e-30)))
        for u, why, _, grown in second:
            if id(u) in candidates and grown:
                if same and why is None:
                    expand.add(u.name)
                    verdict[id(u)] = (u, None)
                elif why is not None:
                    verdict[id(u)] = (u, why)
    exact: Dict[str, str] = {}
    for u, why in verdict.values():
        if why is not None:
            for g in u.params.values():
                exact.setdefault(g, f"{u.label}, run on samples 0 and 1 alone: {why}")
    return exact, expand


def _probe_pass(backend, batch, expand: set):
    """One forward and backward of samples 0 and 1 (units in ``expand`` expanded); what each call showed."""
    sub = batch.select(0, 2)
    seen: List[list] = []  # [unit, why or None, [(leaf, dim)], expanded]

    def hook(unit, module, args, kwargs, output):
        grown = expand_call(module, args, kwargs, output, 2) if id(unit) in expand else None
        if grown is not None:
            args, kwargs, output = grown
        leaves = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
        live = [i for i, t in enumerate(leaves) if t.requires_grad and t.grad_fn is not None]
        if live:
            why = unbatched(module, tree_flatten((args, kwargs))[0], leaves, live, 2)
            dims = batch_dims(module, leaves)
            seen.append([unit, why, [(leaves[i], dims[i]) for i in live], grown is not None])
        return output if grown is not None else None

    handles = [u.module.register_forward_hook(partial(hook, u), with_kwargs=True) for u in backend.units]
    try:
        with torch.enable_grad():
            out = backend.forward(sub)
    finally:
        for h in handles:
            h.remove()
    gen = torch.Generator(device=out.device).manual_seed(0)
    v = torch.zeros_like(out)
    v[1] = torch.randn(out.shape[1:], generator=gen, dtype=out.dtype, device=out.device)
    leaves = [t for _, why, pairs, _ in seen if why is None for t, _ in pairs]
    # retain_graph: a module may hold part of this graph in a cache of its own (timm LeViT)
    grads = iter(torch.autograd.grad(out, leaves, v, allow_unused=True, retain_graph=True) if leaves else ())
    for entry in seen:
        if entry[1] is None:
            for t, d in entry[2]:
                g = next(grads)
                if g is not None and bool(g.narrow(d, 0, 1).ne(0).any()) and entry[1] is None:
                    entry[1] = ("the gradient of sample 1 alone reaches row 0 of its output on the batch "
                                "dimension: its rows are not the samples (a dimension that equals N by "
                                "chance, a broadcast output read per row, or samples mixed)")
    return seen, out.detach()
