"""The ``"rules"`` backend: one forward and one backward per batch, closed forms per layer.

Forward hooks record each parameterized module's inputs and register a hook on its
output; ONE backward of the output gradients ``v`` (see :mod:`ftdfast.fisher.losses`)
then delivers every module's per-sample output gradients. In eval mode a sample's
loss depends only on its own activations, so ``grad_output[n]`` is sample n's.

The backward asks autograd only for the gradients of the lowest hooked outputs (as
``GradientEdge``), so no weight gradient is computed and ``.grad`` is never touched.
A module used once per forward is processed inside its hook, as soon as its output
gradient is complete, and the gradient is released; modules called several times,
or sharing a parameter with another module, are processed after the backward, with
their calls' per-sample gradients added before the square.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch.autograd.graph import get_gradient_edge
from torch.utils._pytree import tree_flatten, tree_map

from ..fallback import fallback_factors, warn_fallback
from ..registry import Call, Rule, find_rule
from ..squares import sum_of_squares_group
from .base import Backend, ParamTable


@dataclass
class _Unit:
    """A module whose parameters one rule (or the fallback) accounts for."""

    name: str
    module: nn.Module
    rule: Optional[Rule]
    params: Dict[str, str]  # local parameter name -> global name
    shared: bool = False  # a parameter also used by another unit (weight tying)
    calls: List[Call] = field(default_factory=list)


def _shape_only(t):
    """A tensor's shape-only (meta) stand-in; anything else as it is."""
    return torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t


def _reaches_hooked(roots, hooked) -> Dict:
    """For every autograd node under ``roots``: does some hooked node lie strictly below it?"""
    memo: Dict = {}
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in memo:
                continue
            children = [c for c, _ in node.next_functions if c is not None]
            if expanded:
                memo[node] = any(c in hooked or memo.get(c, False) for c in children)
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in children if c not in memo)
    return memo


def _graph_variables(root) -> set:
    """ids of the leaf tensors (parameters) whose AccumulateGrad nodes lie under ``root``."""
    seen, found, stack = set(), set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)
        if var is not None:
            found.add(id(var))
        stack.extend(c for c, _ in node.next_functions)
    return found


class RulesBackend(Backend):
    name = "rules"

    def __init__(self, model: nn.Module, table: ParamTable, *, strict: bool = False, **_):
        super().__init__(model, table)
        self.units: List[_Unit] = []
        covered: List[str] = []  # name prefixes of modules whose rule covers their children
        for mname, module in model.named_modules():
            if any(mname.startswith(prefix) for prefix in covered):
                continue
            rule = find_rule(module)
            recurse = bool(rule and rule.covers_children)
            if recurse:
                covered.append(mname + "." if mname else "")
            local = {k: table.name_of(p) for k, p in module.named_parameters(recurse=recurse)
                     if table.name_of(p) is not None}
            if not local:
                continue
            if rule is None:
                if strict:
                    raise TypeError(
                        f"strict=True: no Fisher rule for module {mname or '<model>'} of type "
                        f"{type(module).__qualname__}; register one with ftdfast.register_rule, or drop "
                        "strict to use the torch.func fallback")
                warn_fallback(module)
            self.units.append(_Unit(mname, module, rule, local))
        users: Dict[str, int] = {}
        for u in self.units:
            for g in set(u.params.values()):
                users[g] = users.get(g, 0) + 1
        for u in self.units:
            u.shared = any(users[g] > 1 for g in u.params.values())
        self._last_pass = True
        self._edges: list = []
        self._checked_graph = False

    # ------------------------------------------------------------- hooks
    def _forward_hook(self, unit: _Unit, module, args, kwargs, output):
        # The common case (one output tensor, positional tensor inputs) without pytree walks:
        # this hook runs for every layer of every batch.
        single = isinstance(output, torch.Tensor)
        leaves = [output] if single else [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
        live = [i for i, t in enumerate(leaves) if t.requires_grad and t.grad_fn is not None]
        if not live:
            return None
        if unit.rule is None or not unit.rule.needs_output:
            # holding the output would keep it alive until the end of the pass
            output = _shape_only(output) if single else tree_map(_shape_only, output)
        call = Call(args, kwargs, output, grad=[None] * len(leaves))
        call.extra["live"] = len(live)
        inputs = args if not kwargs and all(isinstance(a, torch.Tensor) for a in args) \
            else tree_flatten((args, kwargs))[0]
        call.extra["versions"] = [(t, t._version) for t in inputs if isinstance(t, torch.Tensor)]
        for i in live:
            leaves[i].register_hook(partial(self._on_grad, unit, call, i))
            self._edges.append(get_gradient_edge(leaves[i]))
        unit.calls.append(call)
        return None

    def _on_grad(self, unit: _Unit, call: Call, index: int, grad: torch.Tensor):
        call.grad[index] = grad
        if call.extra.get("stream"):
            self._accumulate(self._factors(unit, [call]))
            call.grad[index] = None
            if self._last_pass:  # let autograd free this layer's activations as backward goes on
                call.args, call.kwargs, call.output = (), {}, None
                call.extra["versions"] = []
        return None

    # --------------------------------------------------------- computing
    def _factors(self, unit: _Unit, calls: List[Call]) -> Dict[str, list]:
        """Global parameter name -> factors of its per-sample gradients, one per call."""
        out: Dict[str, list] = {}
        for call in calls:
            if all(g is None for g in call.grad):
                continue  # no gradient reached this call
            for t, version in call.extra["versions"]:
                if t._version != version:
                    raise RuntimeError(
                        f"an input of module {unit.name or '<model>'} ({type(unit.module).__qualname__}) was "
                        "modified in place after the module used it; ftdfast needs the inputs as the module saw "
                        "them: make that operation out of place (e.g. nn.ReLU(inplace=False))")
            view = Call(call.args, call.kwargs, call.output,
                        grad=call.grad[0] if len(call.grad) == 1 else tuple(call.grad))
            factors = unit.rule.fn(unit.module, view) if unit.rule is not None else None
            if factors is None:
                if unit.rule is not None:
                    warn_fallback(unit.module, declined=True)
                n = self._batch_n
                factors = fallback_factors(unit.module, view, list(unit.params), n)
            for local, global_name in unit.params.items():
                if local not in factors:
                    raise RuntimeError(
                        f"the Fisher rule {unit.rule.name} for {unit.name or '<model>'} gave no per-sample "
                        f"gradient for its trainable parameter {local!r}")
                out.setdefault(global_name, []).append(factors[local])
        return out

    def _accumulate(self, factors: Dict[str, list]) -> None:
        for name, s in sum_of_squares_group(factors).items():
            self.add(name, s)

    # ------------------------------------------------------------ driving
    def accumulate(self, batch, grads_for) -> None:
        self._batch_n = batch.n
        for u in self.units:
            u.calls.clear()
        self._edges = []
        handles = [u.module.register_forward_hook(partial(self._forward_hook, u), with_kwargs=True)
                   for u in self.units]
        try:
            with torch.enable_grad():
                out = self.forward(batch)
        finally:
            for h in handles:
                h.remove()
        if not self._checked_graph:
            self._check_attribution(out)
        for u in self.units:
            stream = len(u.calls) == 1 and not u.shared and u.calls[0].extra["live"] == 1
            for c in u.calls:
                c.extra["stream"] = stream
        deferred = [u for u in self.units if u.calls and not u.calls[0].extra["stream"]]
        hooked = {e.node for e in self._edges}
        below = _reaches_hooked(hooked, hooked)
        bottom = [e for e in self._edges if not below[e.node]]
        vs = list(grads_for(out))
        for k, v in enumerate(vs):
            self._last_pass = k == len(vs) - 1
            for u in deferred:
                for c in u.calls:
                    c.grad = [None] * len(c.grad)
            if bottom:
                torch.autograd.grad(out, bottom, v, retain_graph=k < len(vs) - 1, allow_unused=True)
            merged: Dict[str, list] = {}
            for u in deferred:
                for name, fs in self._factors(u, u.calls).items():
                    merged.setdefault(name, []).extend(fs)
            if merged:
                self._accumulate(merged)
        for u in self.units:
            u.calls.clear()
        self._edges = []

    def _check_attribution(self, out: torch.Tensor) -> None:
        """Refuse parameters that reach the loss outside the forward of the module that owns them."""
        self._checked_graph = True
        in_graph = _graph_variables(out.grad_fn)
        attributed = {id(self.table.params[g]) for u in self.units if u.calls for g in u.params.values()}
        for name, p in self.table.params.items():
            if id(p) in in_graph and id(p) not in attributed:
                owner = name.rsplit(".", 1)[0] if "." in name else "<model>"
                raise RuntimeError(
                    f"parameter {name} reaches the loss without a call of the module that owns it ({owner}), "
                    "so its per-sample gradient cannot be attributed (its tensor is used directly by another "
                    "module's forward). Register a rule for the module that uses it, or use backend='func'")
