"""``ftdfast.check``: is the fast Fisher exact on *this* model and data?

It runs, on a few samples of the user's data and on float64 copies of the model:

- the fast path, :func:`ftdfast.fisher_diagonal` with the chosen backend (default ``"auto"``);
- an independent reference: one batched forward, then one ``torch.autograd.grad`` of each
  sample's loss (nothing of ftdfast's rules, fallback or square sums is involved);
- a replay of the rules backend's per-module work (each module's rule, or the torch.func
  fallback where it has none or its rule declines the call), timed module by module.

and reports per module: the rule used (or ``"fallback"``), the largest error of its parameters
relative to the model's largest Fisher entry, and its share of the per-module time. The model
is exact when every parameter is within ``tolerance`` and none is all zeros where the
reference is not (what a parameter-derived tensor cached by the module produces).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten

from .fisher.api import fisher_diagonal
from .fisher.backends import ParamTable, RulesBackend
from .fisher.data import Batch, TargetsArg, map_tensors, stream_batches
from .fisher.fallback import fallback_factors
from .fisher.losses import LossArg, resolve_loss
from .fisher.registry import Call
from .fisher.squares import sum_of_squares_group


@dataclass
class ModuleCheck:
    """One module whose parameters one rule (or the fallback) accounts for."""

    name: str
    type: str
    rule: str  # the rule's name, "fallback", or "fallback (declined by <rule>)"
    params: List[str]
    max_error: float  # max |F - F_ref| over its parameters / the model's largest F_ref entry
    zeroed: List[str]  # parameters that came back all zero where the reference is not
    seconds: float  # replayed rule (or fallback) and square sums, for the checked samples


@dataclass
class CheckResult:
    """What :func:`check` found. ``exact`` is the verdict; ``str(result)`` is the table."""

    modules: List[ModuleCheck]
    errors: Dict[str, float]  # parameter -> max |F - F_ref| / largest F_ref entry
    tolerance: float
    samples: int
    backend: str
    seconds: Dict[str, float] = field(default_factory=dict)  # "fast", "reference"
    failure: Optional[str] = None  # the fast path raised this (every parameter then counts as wrong)

    @property
    def exact(self) -> bool:
        return self.failure is None and all(e <= self.tolerance for e in self.errors.values()) and not any(m.zeroed for m in self.modules)

    @property
    def wrong(self) -> List[str]:
        """Parameters off by more than the tolerance, or all zero where the reference is not."""
        zeroed = {p for m in self.modules for p in m.zeroed}
        return [k for k, e in self.errors.items() if e > self.tolerance or k in zeroed or self.failure]

    def format(self) -> str:
        total = sum(m.seconds for m in self.modules) or 1.0
        rows = [("module", "type", "rule", "params", "max rel. error", "time share")]
        for m in self.modules:
            flag = "  ZERO: " + ", ".join(m.zeroed) if m.zeroed else ""
            mark = " !" if m.max_error > self.tolerance or m.zeroed else ""
            rows.append((m.name or "<model>", m.type, m.rule, str(len(m.params)), f"{m.max_error:.1e}{mark}{flag}",
                         f"{100 * m.seconds / total:.0f}%"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        fallback = sum(1 for m in self.modules if m.rule.startswith("fallback"))
        verdict = "EXACT" if self.exact else f"NOT EXACT: {len(self.wrong)} parameters wrong ({', '.join(self.wrong[:5])})"
        if self.failure:
            verdict = f"NOT EXACT: the fast path raised {self.failure}"
        lines.append(f"{verdict}: {len(self.errors)} parameters on {self.samples} samples, backend {self.backend}, "
                     f"tolerance {self.tolerance:g} of the largest Fisher entry (float64); "
                     f"{len(self.modules) - fallback} modules on rules, {fallback} on the fallback; "
                     f"fast {self.seconds.get('fast', 0):.2f} s, reference {self.seconds.get('reference', 0):.2f} s")
        return "\n".join(lines)

    __str__ = format


def check(model: nn.Module, data: Any, *, loss: LossArg = "cross_entropy", samples: int = 8,
          backend: str = "auto", tolerance: float = 1e-9, show: bool = True, targets: TargetsArg = None) -> CheckResult:
    """Compare the fast diagonal Fisher with an independent per-sample reference, module by module.

    Args:
        model: the model as passed to :func:`ftdfast.fisher_diagonal` (eval mode where BatchNorm
            or dropout would mix samples). It is not changed: the check runs on float64 deep copies.
        data: as for :func:`ftdfast.fisher_diagonal`; the first ``samples`` samples are used.
        loss: as for :func:`ftdfast.fisher_diagonal` (the empirical Fisher of that loss).
        samples: how many samples N to check on (a few suffice: a wrong rule is wrong on any batch).
        backend: the fast path's backend (``"auto"``: native kernels where built).
        tolerance: largest accepted ``max |F - F_ref|`` per parameter, relative to the model's
            largest reference entry. float64 rounding is about 1e-15.
        show: print the table.
        targets: where each batch keeps its targets, as for :func:`ftdfast.fisher_diagonal`.

    Returns:
        A :class:`CheckResult`: per module (n sample, one row per module with parameters) the rule
        or fallback, max relative error and time share; ``.exact`` is the verdict.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = next(iter(stream_batches(data, batch_size=samples, max_samples=samples, device=device,
                                      targets=targets)), None)
    if batch is None:
        raise ValueError("the data is empty: no samples to check on")
    spec = resolve_loss(loss)
    inputs = map_tensors(batch.inputs, lambda t: t.double() if t.is_floating_point() else t)
    y = batch.targets.double() if batch.targets.is_floating_point() else batch.targets
    batch = Batch(0, inputs, y, batch.n)

    # every run on its own copy: a module's caches (e.g. eval-mode attention biases) must not leak
    copies = [copy.deepcopy(model).double() for _ in range(3)]
    t0 = time.perf_counter()
    failure, used = None, backend
    try:
        fast = fisher_diagonal(copies[0], [(inputs, y)], loss=spec,
                               backend=backend, progress=False)
        used = fast.meta["backend"]
    except (ValueError, TypeError):  # the user's model or data: not a verdict on the rules
        raise
    except Exception as e:
        failure, fast = f"{type(e).__name__}: {e}", None
    t1 = time.perf_counter()
    want = _reference(copies[1], batch, spec)
    t2 = time.perf_counter()
    scale = max((float(v.abs().max()) for v in want.values() if v.numel()), default=0.0) or 1.0
    if fast is None:
        errors, zeroed = {k: float("inf") for k in want}, set()
    else:
        errors = {k: float((fast[k] - want[k]).abs().max()) / scale if want[k].numel() else 0.0 for k in want}
        zeroed = {k for k in want if bool(want[k].ne(0).any()) and not bool(fast[k].ne(0).any())}

    modules = []
    for unit, rule_name, seconds in _replay(copies[2], batch, spec):
        names = sorted(set(unit.params.values()))
        modules.append(ModuleCheck(unit.name, type(unit.module).__qualname__, rule_name, names,
                                   max((errors[g] for g in names), default=0.0),
                                   [g for g in names if g in zeroed], seconds))
    result = CheckResult(modules, errors, tolerance, batch.n, used, {"fast": t1 - t0, "reference": t2 - t1}, failure)
    if show:
        print(result.format())
    return result


def _reference(model: nn.Module, batch: Batch, spec) -> Dict[str, torch.Tensor]:
    """One batched forward, one autograd.grad per sample's loss: ``(1/N) sum_n g_n^2`` per parameter."""
    table = ParamTable(model)
    names, params = list(table.params), list(table.params.values())
    acc = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        losses = spec.per_sample(batch.call(model), batch.targets)
        m = losses.shape[0]  # the samples: rows, or label tokens for a token-level loss
        for n in range(m):
            grads = torch.autograd.grad(losses[n], params, retain_graph=n < m - 1, allow_unused=True)
            for a, g in zip(acc, grads):
                if g is not None:
                    a.add_(g.square())
    return {k: a / m for k, a in zip(names, acc)}


def _replay(model: nn.Module, batch: Batch, spec):
    """(unit, rule used, seconds) for every rules-backend unit: its rule or fallback and square sums, timed."""
    engine = RulesBackend(model, ParamTable(model))
    calls: Dict[int, list] = {id(u): [] for u in engine.units}
    edges = []

    def hook(unit, module, args, kwargs, output):
        leaves = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
        call = Call(args, kwargs, output, grad=[None] * len(leaves))
        for i, t in enumerate(leaves):
            if t.requires_grad:
                t.register_hook(lambda g, call=call, i=i: call.grad.__setitem__(i, g))
                edges.append(t)
        calls[id(unit)].append(call)

    handles = [u.module.register_forward_hook(lambda m, a, k, o, u=u: hook(u, m, a, k, o), with_kwargs=True)
               for u in engine.units]
    try:
        with torch.enable_grad():
            out = batch.call(model)
    finally:
        for h in handles:
            h.remove()
    v = next(iter(spec.output_grads(out, batch.targets, "empirical")))
    if edges:
        torch.autograd.grad(out, edges, v, allow_unused=True)
    for unit in engine.units:
        used = "fallback" if unit.rule is None else unit.rule.name
        start = time.perf_counter()
        try:
            used = _replay_unit(unit, calls[id(unit)], batch.n, used)
        except Exception as e:  # the replay only times; the verdict comes from fisher_diagonal itself
            used += f" [raised {type(e).__name__}]"
        yield unit, used, time.perf_counter() - start


def _replay_unit(unit, calls, n: int, used: str) -> str:
    """One unit's factors (rule, or fallback where it has none or declines) and square sums; the rule used."""
    factors: Dict[str, list] = {}
    for call in calls:
        if all(g is None for g in call.grad):
            continue
        view = Call(call.args, call.kwargs, call.output, grad=call.grad[0] if len(call.grad) == 1
                    else tuple(call.grad))
        got = unit.rule.fn(unit.module, view) if unit.rule is not None else None
        if got is None:
            if unit.rule is not None:
                used = f"fallback (declined by {unit.rule.name})"
            got = fallback_factors(unit.module, view, list(unit.params), n)
        for local, global_name in unit.params.items():
            if local in got:
                factors.setdefault(global_name, []).append(got[local])
    if factors:
        sum_of_squares_group(factors)
    return used
