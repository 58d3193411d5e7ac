"""Elastic weight consolidation (Kirkpatrick et al. 2017; online EWC: Schwarz et al. 2018)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ._names import align_names, check_fisher, match_names, parameters_of, pick_names, tensors_of

Term = Dict[str, Tuple[torch.Tensor, torch.Tensor]]  # name -> (Fisher F_i, anchor theta*_i)


def _store_dtype(p: torch.Tensor) -> torch.dtype:
    """float32 at least: a Fisher entry of 1e-9 is 0 in float16, and bfloat16 keeps 3 digits."""
    return torch.promote_types(p.dtype, torch.float32)


class EWC:
    """The EWC penalty of a model: a quadratic pull towards earlier tasks' parameters.

    Not an ``nn.Module``: build it after training a task, add ``ewc.penalty(model)``
    to the next task's loss in any optimizer loop. With tasks t = 1..T added
    (the first by the constructor, the others by :meth:`add_task`)::

        penalty(model) = strength / 2 * sum_t sum_i F_t,i * (theta_i - theta*_t,i)^2

    where i runs over every entry of every penalized parameter, ``F_t`` is task t's
    Fisher diagonal (e.g. ``fisher_diagonal(model, task_t_data)``: the MEAN over samples
    of the squared per-sample gradient) and ``theta*_t`` its anchor (the parameters
    after training task t). With ``online=True`` (Schwarz et al., "Progress & Compress")
    a single term is kept: ``add_task`` replaces it by ``F <- decay * F + F_new`` and
    ``theta* <- theta*_new``, so memory stays at 2 copies of the parameters.

    Scale of ``strength``: with a per-sample-mean Fisher, the Laplace approximation of
    task A's summed log-likelihood is ``N_A / 2 * sum_i F_i (theta_i - theta*_i)^2``; next to a
    task-B loss that is a mean over N_B samples, ``strength = N_A / N_B`` is that
    approximation. In practice it is tuned (see docs/uses.md).

    Args:
        model: the model the Fisher belongs to, possibly wrapped in
            ``DistributedDataParallel``/``DataParallel`` (names are those of the inner module).
        fisher: a :class:`~ftdfast.FisherDiagonal` or a mapping name -> tensor of the
            parameter's shape; its names may differ from the model's by one wrapper prefix
            (``module.``, ``_orig_mod.``, ``hf.``, ``base_model.model.`` or a nesting: a Fisher
            of a wrapper module whose ``.hf`` is the model fits the bare model, and the
            reverse). Never recomputed.
            Each tensor is copied once, here, to its parameter's device, in the parameter's
            dtype or float32 where that is narrower (float16/bfloat16 models).
        anchor: theta*: a mapping name -> tensor (e.g. a state_dict) holding every entry of
            ``fisher`` (up to one wrapper prefix); default: a copy of the model's parameters now.
        strength: lambda >= 0 above.
        online: keep one decayed term (online EWC) instead of one term per task.
        decay: gamma in [0, 1] of online EWC; must stay 1 unless ``online``.
        strict: every trainable parameter of the model must have a Fisher entry (catches a
            Fisher of another model). ``strict=False`` leaves parameters without one
            unpenalized (e.g. a head added for the new task).

    Frozen parameters (``requires_grad=False`` when :meth:`penalty` is called) are skipped.
    Errors name the first parameter that is missing or has the wrong shape.
    """

    def __init__(self, model: nn.Module, fisher: Mapping, anchor: Optional[Mapping] = None, *,
                 strength: float = 1.0, online: bool = False, decay: float = 1.0, strict: bool = True):
        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
            raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
        if not (isinstance(decay, (int, float)) and 0 <= decay <= 1):
            raise ValueError(f"decay must be in [0, 1], got {decay!r}")
        if decay != 1 and not online:
            raise ValueError(f"decay={decay} applies to online EWC only: pass online=True, or leave decay=1 "
                             "to keep one term per task")
        self.strength = float(strength)
        self.online = bool(online)
        self.decay = float(decay)
        self.strict = bool(strict)
        self.num_tasks = 0
        self._terms: List[Term] = []
        self.add_task(model, fisher, anchor)

    def __repr__(self) -> str:
        numel = sum(f.numel() for term in self._terms for f, _ in term.values())
        kind = f"online, decay={self.decay}" if self.online else f"{len(self._terms)} terms"
        return f"EWC(strength={self.strength}, {self.num_tasks} tasks, {kind}, {numel} penalized values)"

    @property
    def names(self) -> List[str]:
        """The parameters that carry a penalty (in the first term's order)."""
        seen: Dict[str, None] = {}
        for term in self._terms:
            seen.update(dict.fromkeys(term))
        return list(seen)

    def add_task(self, model: nn.Module, fisher: Mapping, anchor: Optional[Mapping] = None) -> None:
        """Add a task: its Fisher (name -> tensor, the parameter's shape) and anchor (default: the
        model's parameters now). Online: ``F <- decay * F + fisher``, ``theta* <- anchor``."""
        params = parameters_of(model)
        if not params:
            raise ValueError("the model has no parameters")
        fisher = align_names(tensors_of(fisher, "fisher"), params, "fisher", "the model")
        check_fisher(fisher, params, "fisher")
        self._follow_names(params)
        if self.strict:
            for name, p in params.items():
                if p.requires_grad and name not in fisher:
                    raise ValueError(f"the model's trainable parameter {name!r} has no entry in the Fisher; pass a "
                                   "Fisher of this model, or strict=False to leave such parameters unpenalized")
        if self.online and self._terms:
            old = self._terms[0]
            names = list(old) + [k for k in fisher if k not in old]
            anchors = self._anchors(names, params, anchor)
            term: Term = {}
            for name in names:
                p = params[name]
                f = torch.zeros_like(p.detach(), dtype=_store_dtype(p)) if name not in old else \
                    old[name][0].to(p.device, _store_dtype(p)) * self.decay
                if name in fisher:
                    f = f + fisher[name].to(p.device, _store_dtype(p))
                term[name] = (f.detach(), anchors[name])
            self._terms = [term]
        else:
            anchors = self._anchors(list(fisher), params, anchor)
            self._terms.append({name: (f.to(params[name].device, _store_dtype(params[name]), copy=True), anchors[name])
                                for name, f in fisher.items()})
        self.num_tasks += 1

    @staticmethod
    def _anchors(names: List[str], params: Dict[str, torch.Tensor],
                 anchor: Optional[Mapping]) -> Dict[str, torch.Tensor]:
        if anchor is None:
            return {n: params[n].detach().to(dtype=_store_dtype(params[n]), copy=True) for n in names}
        if not isinstance(anchor, Mapping):
            raise TypeError(f"anchor must be a mapping name -> tensor (a state_dict) or None, got "
                            f"{type(anchor).__name__}")
        anchor = pick_names(anchor, names, "anchor", "the Fisher")
        out = {}
        for n in names:
            a, p = anchor[n], params[n]
            if not isinstance(a, torch.Tensor) or a.shape != p.shape:
                got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
                raise ValueError(f"anchor[{n!r}] is {got}; the parameter has shape {tuple(p.shape)}")
            out[n] = a.detach().to(p.device, _store_dtype(p), copy=True)
        return out

    def _follow_names(self, params: Dict[str, torch.Tensor]) -> None:
        """Rename the stored terms onto ``params``' names where the model is now wrapped differently
        (e.g. compiled or put in a wrapper module after the task was added): one prefix change."""
        names = self.names
        if all(n in params for n in names):
            return
        rename = match_names(names, params, "EWC's penalized parameters", "the model")
        self._terms = [{rename[n]: v for n, v in term.items()} for term in self._terms]

    def state_dict(self) -> Dict:
        """Everything needed to rebuild this penalty (CPU tensors, ``torch.save``-able with
        ``weights_only`` loading): :meth:`from_state_dict` inverts it."""
        return {"format": "ftdfast.uses.EWC", "strength": self.strength, "online": self.online,
                "decay": self.decay, "strict": self.strict, "num_tasks": self.num_tasks,
                "terms": [{n: (f.cpu(), a.cpu()) for n, (f, a) in term.items()} for term in self._terms]}

    @classmethod
    def from_state_dict(cls, state: Dict) -> "EWC":
        """The penalty saved by :meth:`state_dict`; its tensors move to the model's device at the first
        :meth:`penalty`."""
        if not isinstance(state, dict) or state.get("format") != "ftdfast.uses.EWC":
            raise ValueError("not an EWC state_dict (written by EWC.state_dict)")
        ewc = cls.__new__(cls)
        ewc.strength, ewc.online, ewc.decay = float(state["strength"]), bool(state["online"]), float(state["decay"])
        ewc.strict, ewc.num_tasks = bool(state["strict"]), int(state["num_tasks"])
        ewc._terms = [{n: (f, a) for n, (f, a) in term.items()} for term in state["terms"]]
        return ewc

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``strength / 2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2``: a differentiable scalar ()
        on the device and in the dtype of the model's parameters (summed in float32 at least, then
        cast to the first penalized parameter's dtype). ``model`` may be the one given
        to the constructor or a moved copy, wrapped anew or not (names up to one wrapper
        prefix: the stored terms are renamed once to follow it); frozen parameters are
        skipped, and a model with none penalized gives a zero scalar."""
        params = parameters_of(model)
        if not params:
            raise ValueError("the model has no parameters")
        self._follow_names(params)
        total: Optional[torch.Tensor] = None
        dtype: Optional[torch.dtype] = None
        for term in self._terms:
            for name, (f, a) in term.items():
                p = params[name]
                if p.shape != f.shape:
                    raise ValueError(f"parameter {name!r} has shape {tuple(p.shape)}; EWC holds {tuple(f.shape)}")
                if not p.requires_grad:
                    continue
                sd = _store_dtype(p)
                if f.device != p.device or f.dtype != sd:  # the model moved: move once, keep
                    f, a = f.to(p.device, sd), a.to(p.device, sd)
                    term[name] = (f, a)
                dtype = dtype or p.dtype
                d = p.to(sd) - a
                s = (f * d * d).sum()
                total = s if total is None else total + s
        if total is None:
            p = next(iter(params.values()))
            return torch.zeros((), device=p.device, dtype=p.dtype)
        return (total * (self.strength / 2)).to(dtype)
