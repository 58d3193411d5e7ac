"""The hook engine of the ``"rules"`` and ``"native"`` backends: one forward and one backward per batch, closed
forms per layer (the layers' rules are in :mod:`ftdfast.fisher.rules`).

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

A rule's per-sample formula holds only where the module's inputs and outputs carry
the batch's N samples on their batch dimension (:mod:`.batch_check`): every call's
sizes are checked, and a two-sample probe checks the rows once. A module whose one
output is computed once and broadcast (a position table on ``arange(T)[None]``) has
that output expanded to the samples where the probe shows it is safe; any other call
without the samples (a relative-position bias with no batch dimension, a batch folded
into ``(N * P, ...)``) sends its module's parameters to the exact path
(:mod:`.exact`). The torch.func fallback is checked on the first batch: its
per-sample gradients must add up to the module's gradient from the batch's own
backward (:meth:`RulesBackend._guard`); a module that fails (it reads a
parameter-derived tensor cached in eval mode) goes to the exact path from then on.
Raw parameters of a module without a rule whose children have rules (ViT's class
token) are taken from the graph nodes that use them (:mod:`.raw`) where that agrees
with the fallback on the first batch.

``native=True`` uses the C++/CUDA kernels for the closed forms where they are built
(``backend="native"`` / ``"auto"``); ``native=False`` pure PyTorch (``backend="rules"``).
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.utils._pytree import tree_flatten, tree_map

from ..factors import widen
from ..fallback import fallback_factors, warn_fallback
from ..losses import FISHER_KINDS
from ..registry import Call, Rule, find_rule
from ..squares import sum_of_squares_group, use_impl
from .base import Backend, ParamTable
from . import batch_check, raw
from .batch_check import expand_call, unbatched
from .exact import exact_square_sums

# How far the fallback's summed per-sample gradients may be from the module's gradient (relative to the
# larger of the two's largest entry), by dtype: a few thousand roundings.
_GUARD_RTOL = {torch.float64: 1e-7, torch.float32: 1e-3}
_GUARD_RTOL_LOW = 5e-2  # half precision


@dataclass
class _Unit:
    """A module whose parameters one rule (or the fallback) accounts for."""

    name: str
    module: nn.Module
    rule: Optional[Rule]
    params: Dict[str, str]  # local parameter name -> global name
    shared: bool = False  # a parameter also used by another unit (weight tying)
    calls: List[Call] = field(default_factory=list)
    expand: bool = False  # its output is computed once and broadcast: expanded to the N samples (see _probe)

    @property
    def batch_norm(self) -> bool:
        return isinstance(self.module, nn.modules.batchnorm._BatchNorm)

    @property
    def label(self) -> str:
        return f"{self.name or '<model>'} ({type(self.module).__qualname__})"


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


# model -> {probe key: names of fallback units whose raw parameters agreed with the fallback (backends.raw)}
_RAW_OK: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_RAW_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}


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
    distributed = True
    fisher_kinds = FISHER_KINDS

    def __init__(self, model: nn.Module, table: ParamTable, *, native: bool = False, strict: bool = False, **_):
        super().__init__(model, table)
        self.native = native
        self.name = "native" if native else "rules"
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
        self._quiet = False  # the exact path's backwards run through the hooks: they stay quiet
        self._guarding = False  # this batch checks the fallback (the first batch)
        self._guarded = False
        self._probed = False
        self._key = None  # the probe key of this call's first batch
        # fallback units with ruled children: "trial" (first batch: raw path beside the fallback), "ok", "no"
        self._raw_state: Dict[str, str] = {
            u.name: "trial" for u in self.units
            if u.rule is None and any(v is not u and v.name.startswith(u.name + "." if u.name else "")
                                      for v in self.units)}
        self.exact: Dict[str, str] = {}  # global parameter name -> why it takes the exact path (every batch)
        self._batch_exact: Dict[str, str] = {}  # the same for this batch only (unbatched calls)
        self._told: set = set()  # exact-path parameters already named in a warning

    # ------------------------------------------------------------- hooks
    def _forward_hook(self, unit: _Unit, module, args, kwargs, output):
        # The common case (one output tensor, positional tensor inputs) without pytree walks:
        # this hook runs for every layer of every batch.
        replaced = None
        if unit.expand and self._batch_n > 1:
            grown = expand_call(module, args, kwargs, output, self._batch_n)
            if grown is not None:
                args, kwargs, output = grown
                replaced = output  # the model goes on with the expanded output: per-sample rows
        single = isinstance(output, torch.Tensor)
        leaves = [output] if single else [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
        live = [i for i, t in enumerate(leaves) if t.requires_grad and t.grad_fn is not None]
        if not live:
            return replaced
        inputs = args if not kwargs and all(isinstance(a, torch.Tensor) for a in args) \
            else tree_flatten((args, kwargs))[0]
        why = unbatched(unit.module, inputs, leaves, live, self._batch_n)
        if why is not None:
            for g in unit.params.values():
                self._batch_exact.setdefault(g, f"{unit.label}: {why}")
        self._graph_elements += sum(leaves[i].numel() for i in live)
        if unit.rule is None or not unit.rule.needs_output:
            # holding the output would keep it alive until the end of the pass
            output = _shape_only(output) if single else tree_map(_shape_only, output)
        call = Call(args, kwargs, output, grad=[None] * len(leaves))
        call.extra["live"] = len(live)
        call.extra["versions"] = [(t, t._version) for t in inputs if isinstance(t, torch.Tensor)]
        for i in live:
            leaves[i].register_hook(partial(self._on_grad, unit, call, i))
            self._edges.append(get_gradient_edge(leaves[i]))
        unit.calls.append(call)
        return replaced

    def _on_grad(self, unit: _Unit, call: Call, index: int, grad: torch.Tensor):
        if self._quiet:
            return None
        replaced = None
        if unit.batch_norm and grad.dim() > 1 and grad.shape[0] == 1 and not grad.is_contiguous():
            # torch 2.14.1's CPU BatchNorm backward is wrong for a batch of one whose gradient has
            # channels-last strides with a batch stride of C (docs/known-issues.md): hand it a contiguous one
            grad = replaced = grad.contiguous()
        call.grad[index] = grad
        if call.extra.get("stream"):
            self._accumulate(self._factors(unit, [call]))
            call.grad[index] = None
            if self._last_pass:  # let autograd free this layer's activations as backward goes on
                call.args, call.kwargs, call.output = (), {}, None
        return replaced

    # --------------------------------------------------------- computing
    def _is_exact(self, global_name: str) -> bool:
        return global_name in self.exact or global_name in self._batch_exact

    def _factors(self, unit: _Unit, calls: List[Call]) -> Dict[str, list]:
        """Global parameter name -> factors of its per-sample gradients, one per call (exact ones left out)."""
        out: Dict[str, list] = {}
        names = [k for k, g in unit.params.items() if not self._is_exact(g)]
        if not names:
            return out
        for call in calls:
            if all(g is None for g in call.grad):
                continue  # no gradient reached this call
            view = Call(call.args, call.kwargs, call.output,
                        grad=call.grad[0] if len(call.grad) == 1 else tuple(call.grad))
            factors = unit.rule.fn(unit.module, view) if unit.rule is not None else None
            if factors is None:
                if unit.rule is not None:
                    warn_fallback(unit.module, declined=True)
                factors = fallback_factors(unit.module, view, list(unit.params), self._batch_n,
                                           track_sums=self._guarding)
                call.extra["fallback"] = factors
            for local in names:
                if local not in factors:
                    raise RuntimeError(
                        f"the Fisher rule {unit.rule.name} for {unit.label} gave no per-sample "
                        f"gradient for its trainable parameter {local!r}")
                f = factors[local]
                if int(f.n) != self._batch_n:
                    raise RuntimeError(
                        f"the Fisher rule {unit.rule.name} for {unit.label} gave per-sample gradients "
                        f"of {f.n} samples for {local!r} in a batch of {self._batch_n}")
                out.setdefault(unit.params[local], []).append(f)
        return out

    def _accumulate(self, factors: Dict[str, list]) -> None:
        for name, s in sum_of_squares_group(factors).items():
            self.add(name, s)

    def _guard(self, unit: _Unit, batch_grads: Dict[str, torch.Tensor]) -> Optional[str]:
        """None when the fallback's per-sample gradients of ``unit`` add up to its gradient from the graph.

        Runs after the fallback's squares were computed (its chunks summed the per-sample
        gradients on the way); ``batch_grads``: the gradients of ``<out, v>`` w.r.t. the
        unit's parameters, taken by the batch's own backward (no extra pass).
        """
        for local, global_name in unit.params.items():
            want = batch_grads.get(global_name)
            if want is None:
                continue
            got = None
            for call in unit.calls:
                factors = call.extra.get("fallback")
                part = factors[local].source.sums.get(local) if factors is not None else None
                if part is not None:
                    got = part if got is None else got + part
            got = torch.zeros_like(want) if got is None else got.detach().reshape(want.shape)
            scale = max(float(want.abs().max()), float(got.abs().max())) if want.numel() else 0.0
            err = float((got - want).abs().max()) if want.numel() else 0.0
            if err > _GUARD_RTOL.get(want.dtype, _GUARD_RTOL_LOW) * scale + 1e-30:
                return (f"the torch.func fallback's per-sample gradients of {local!r} add up to a sum that "
                        f"differs from the module's gradient by {err:.3g} (largest entry {scale:.3g}); "
                        "the module's forward does not read its parameters through functional_call "
                        "(e.g. it caches a parameter-derived tensor in eval mode)")
        return None

    def _probe(self, batch) -> None:
        """The two-sample probe's verdict (:func:`batch_check.probe`); the raw-path verdicts of earlier calls."""
        self._probed = True
        key = self._key = batch_check.probe_key(self, batch)
        exact, expand = batch_check.probe(self, batch, key)
        for g, why in exact.items():
            self.exact.setdefault(g, why)
        for u in self.units:
            u.expand = u.name in expand
        try:
            known = _RAW_OK.get(self.model, {}).get(key, ())
        except TypeError:
            known = ()
        for name in known:
            if self._raw_state.get(name) == "trial":
                self._raw_state[name] = "ok"

    def _raw_uses(self, out) -> Dict[str, Dict[str, list]]:
        """Unit name -> {global parameter name -> its uses} for the units whose raw path runs this batch."""
        units = [u for u in self.units if self._raw_state.get(u.name) in ("trial", "ok") and u.calls
                 and not u.shared and not any(self._is_exact(g) for g in u.params.values())
                 and (self._raw_state[u.name] == "ok" or self._guarding)]
        if not units:
            return {}
        params = {g: self.table.params[g] for u in units for g in u.params.values()}
        uses = raw.find_uses(out.grad_fn, params)
        found = {}
        for u in units:
            mine = {g: uses[g] for g in u.params.values()}
            if all(raw.supported(us) for us in mine.values()):
                found[u.name] = mine
            else:
                self._raw_state[u.name] = "no"
        return found

    def _raw_sums(self, unit: _Unit, uses, node_grads) -> Optional[Dict[str, torch.Tensor]]:
        """The raw path's square sums for ``unit``'s parameters, or None where some use does not fit."""
        if not uses:
            return None
        out = {}
        for g, us in uses.items():
            p = self.table.params[g]
            total = None
            for node, index in us:
                part = raw.per_sample(node, index, node_grads.get(node), p, self._batch_n)
                if part is None:
                    self._raw_state[unit.name] = "no"
                    return None
                total = widen(part) if total is None else total + widen(part)
            out[g] = total.square().sum(dim=0)
        return out

    def _raw_verdict(self, unit: _Unit, raw_sums, fallback_sums) -> None:
        """First batch: keep the raw path for later batches (and calls) only where it equals the fallback."""
        ok = raw_sums is not None and fallback_sums is not None and set(raw_sums) <= set(fallback_sums)
        for g, s in (raw_sums or {}).items():
            if not ok:
                break
            want = fallback_sums[g]
            scale = float(want.abs().max()) if want.numel() else 0.0
            rtol = _RAW_RTOL.get(self.table.params[g].dtype, 1e-2)  # the model's dtype: the sums are widened
            ok = float((s - want).abs().max()) <= rtol * scale + 1e-30
        self._raw_state[unit.name] = "ok" if ok else "no"
        if ok and self._key is not None:
            try:
                _RAW_OK.setdefault(self.model, {}).setdefault(self._key, set()).add(unit.name)
            except TypeError:
                pass

    def _exact_pass(self, out: torch.Tensor, v: torch.Tensor) -> None:
        names = sorted(set(self.exact) | set(self._batch_exact))
        if not names:
            return
        new = [k for k in names if k not in self._told]
        if new:
            self._told.update(new)
            why = {**self._batch_exact, **self.exact}
            warnings.warn("ftdfast: exact per-sample backwards (slower) for " + "; ".join(
                f"{k}: {why[k]}" for k in new), stacklevel=5)
        self._quiet = True
        try:
            sums = exact_square_sums(out, v, {k: self.table.params[k] for k in names}, self._graph_elements)
        finally:
            self._quiet = False
        for k, s in sums.items():
            self.add(k, s)

    # ------------------------------------------------------------ driving
    def accumulate(self, batch, grads_for) -> None:
        with use_impl("auto" if self.native else "ref"):
            self._accumulate_batch(batch, grads_for)

    def _accumulate_batch(self, batch, grads_for) -> None:
        self._batch_n = batch.n
        self._batch_exact = {}
        self._graph_elements = 0
        self._guarding = not self._guarded and any(u.rule is None for u in self.units)
        probe_error = None
        if not self._probed and batch.n >= 2:
            try:
                self._probe(batch)  # before the batch's forward: it decides which units expand
            except Exception as e:  # noqa: BLE001  (re-raised below, after the batch's own checks)
                probe_error = e
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
            for call in u.calls:
                for t, version in call.extra.pop("versions"):
                    if t._version != version:
                        raise RuntimeError(
                            f"an input of module {u.label} was modified in place after the module used it; "
                            "ftdfast needs the inputs as the module saw them: make that operation out of place "
                            "(e.g. nn.ReLU(inplace=False))")
        if probe_error is not None:
            raise probe_error  # the batch's own forward and checks name the problem better, when they can
        raw_uses = self._raw_uses(out)
        for u in self.units:
            stream = len(u.calls) == 1 and not u.shared and u.calls[0].extra["live"] == 1 \
                and not (self._guarding and u.rule is None) and u.name not in raw_uses
            for c in u.calls:
                c.extra["stream"] = stream
        deferred = [u for u in self.units if u.calls and not u.calls[0].extra["stream"]]
        hooked = {e.node for e in self._edges}
        below = _reaches_hooked(hooked, hooked)
        bottom = [e for e in self._edges if not below[e.node]]
        guarded = [u for u in self.units if self._guarding and u.rule is None and u.calls and not u.shared]
        # a failed guard goes exact; a mul's saved factor is read after the backward
        keep_graph = bool(self.exact) or bool(self._batch_exact) or bool(guarded) or bool(raw_uses)
        guard_names = [g for u in guarded for g in u.params.values() if not self._is_exact(g)]
        raw_nodes = list({node: None for uses in raw_uses.values() for us in uses.values() for node, _ in us})
        roots = bottom + [self.table.params[g] for g in guard_names] + [GradientEdge(nd, 0) for nd in raw_nodes]
        vs = list(grads_for(out))
        for k, v in enumerate(vs):
            self._last_pass = k == len(vs) - 1
            for u in deferred:
                for c in u.calls:
                    c.grad = [None] * len(c.grad)
            grads = torch.autograd.grad(out, roots, v, retain_graph=keep_graph or not self._last_pass,
                                        allow_unused=True) if roots else ()
            batch_grads = {g: t for g, t in zip(guard_names, grads[len(bottom):]) if t is not None}
            node_grads = dict(zip(raw_nodes, grads[len(bottom) + len(guard_names):]))
            merged: Dict[str, list] = {}
            for u in deferred:
                raw_sums = self._raw_sums(u, raw_uses.get(u.name), node_grads)
                if raw_sums is not None and self._raw_state.get(u.name) == "ok":
                    for name, s in raw_sums.items():
                        self.add(name, s)
                    continue
                fs = self._factors(u, u.calls)
                if not fs:
                    continue
                sums = sum_of_squares_group(fs) if u in guarded else None
                if self._raw_state.get(u.name) == "trial":
                    self._raw_verdict(u, raw_sums, sums)
                why = self._guard(u, batch_grads) if sums is not None else None
                if why is not None:
                    for g in u.params.values():
                        self.exact[g] = f"{u.label}: {why}"
                    warnings.warn(f"ftdfast: {u.label}: {why}; its parameters take the exact path "
                                  "(per-sample backwards through the model: slower)", stacklevel=4)
                elif sums is not None:
                    for name, s in sums.items():
                        self.add(name, s)
                else:
                    for name, f in fs.items():
                        merged.setdefault(name, []).extend(f)
            if merged:
                self._accumulate(merged)
            self._exact_pass(out, v)
        self._guarding, self._guarded = False, True
        for u in self.units:
            u.calls.clear()
        self._edges = []

    def _check_attribution(self, out: torch.Tensor) -> None:
        """Refuse parameters that reach the loss outside the forward of the module that owns them."""
        self._checked_graph = True
        in_graph = _graph_variables(out.grad_fn)
        attributed = {id(self.table.params[g]) for u in self.units if u.calls for g in u.params.values()}
        unseen = sorted(g for u in self.units if u.calls for g in u.params.values()
                        if id(self.table.params[g]) not in in_graph)
        if unseen:
            warnings.warn(
                f"ftdfast: {len(unseen)} parameters of modules that ran are not in the output's autograd graph, "
                f"so their Fisher is zero: {', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}. If the "
                "module reads a tensor it cached from them (an eval-mode cache made under torch.no_grad), the "
                "true Fisher is not zero: clear that cache before calling fisher_diagonal", stacklevel=4)
        for name, p in self.table.params.items():
            if id(p) in in_graph and id(p) not in attributed:
                owner = name.rsplit(".", 1)[0] if "." in name else "<model>"
                raise RuntimeError(
                    f"parameter {name} reaches the loss without a call of the module that owns it ({owner}), "
                    "so its per-sample gradient cannot be attributed (its tensor is used directly by another "
                    "module's forward). Register a rule for the module that uses it, or use backend='func'")
