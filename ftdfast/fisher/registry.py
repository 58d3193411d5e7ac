"""Registry of per-layer Fisher rules.

A rule turns one call of a module (its inputs and its output gradient) into the
factored per-sample gradients (:mod:`ftdfast.fisher.factors`) of the parameters
it covers::

    @register_rule(nn.Linear)
    def linear(module, call) -> dict[str, factor] | None

``call.args`` / ``call.kwargs`` are the module's inputs, ``call.output`` its output
(as returned by ``forward``; its tensors are shape-only ``meta`` stand-ins unless the
rule is registered with ``needs_output=True``, so that the Fisher pass does not keep
every layer's output alive as f+b would not), ``call.grad`` the gradient of the (scaled) per-sample
losses w.r.t. that output, or a tuple of them (``None`` where no gradient flowed)
when the output is a tuple. Keys are parameter names relative to the module. A rule
may return ``None`` to decline a configuration it does not handle; the module then
goes to the torch.func fallback.

``covers_children=True`` says the rule accounts for the parameters of the module's
sub-modules too (``nn.MultiheadAttention`` uses ``out_proj``'s weights without
calling it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Type

import torch.nn as nn


@dataclass
class Call:
    """One forward call of a module, with the output gradient once backward reaches it."""

    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    output: Any
    grad: Any = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    fn: Callable[[nn.Module, Call], Optional[dict]]
    covers_children: bool = False
    needs_output: bool = False

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


_RULES: Dict[Type[nn.Module], Rule] = {}


def register_rule(*module_types: Type[nn.Module], covers_children: bool = False, needs_output: bool = False):
    """Register ``fn(module, call)`` as the Fisher rule of ``module_types`` (a decorator).

    ``needs_output=True``: the rule reads the values of ``call.output`` (otherwise it sees
    shape-only meta tensors there, and the module's output is freed as in a plain backward).
    """
    if not module_types:
        raise TypeError("register_rule needs at least one module type")

    def deco(fn):
        for t in module_types:
            if not (isinstance(t, type) and issubclass(t, nn.Module)):
                raise TypeError(f"register_rule expects nn.Module subclasses, got {t!r}")
            _RULES[t] = Rule(fn, covers_children, needs_output)
        return fn

    return deco


def find_rule(module: nn.Module) -> Optional[Rule]:
    """The rule for ``module``'s type: its own, or a base class's if the subclass keeps the base ``forward``.

    A subclass that overrides ``forward`` computes something else, so it gets no
    inherited rule (it goes to the fallback unless it registers its own).
    """
    cls = type(module)
    if cls in _RULES:
        return _RULES[cls]
    for base in cls.__mro__[1:]:
        if base in _RULES:
            return _RULES[base] if cls.forward is base.forward else None
    return None


def registered_types() -> Tuple[Type[nn.Module], ...]:
    return tuple(_RULES)
