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

Classes of libraries ftdfast must not import (timm, torchvision, transformers) get
their rules lazily: :func:`register_lazy_rule` names the class by its defining module
and qualified name (``"timm.layers.norm.LayerNorm2d"``), :func:`register_rule_provider`
adds a function ``cls -> Rule | None`` (transformers' copied classes, recognised by the
source of their ``forward``). :func:`find_rule` consults them only for a class that has
no rule of its own in the eager table, once per class (the answer, ``None`` included,
is memoized), and never imports anything. A rule registered with :func:`register_rule`
wins over a lazy one for the same class.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

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


_RULES: Dict[Type[nn.Module], Rule] = {}  # eager: the classes themselves
Provider = Callable[[Type[nn.Module]], Optional[Rule]]
_LAZY_BY_NAME: Dict[str, Rule] = {}  # "<defining module>.<qualname>" -> rule
_PROVIDERS: List[Provider] = []
# class -> its own lazy rule or None, looked up once; weak keys let classes made at run time go
_LAZY_MEMO: "weakref.WeakKeyDictionary[type, Optional[Rule]]" = weakref.WeakKeyDictionary()


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


def register_lazy_rule(*qualnames: str, covers_children: bool = False, needs_output: bool = False):
    """Register ``fn(module, call)`` as the rule of the classes named ``qualnames`` (a decorator).

    A name is the class's defining module and qualified name, ``cls.__module__ + "." +
    cls.__qualname__`` (``"transformers.pytorch_utils.Conv1D"``), not a re-export's path.
    Nothing is imported: the name is compared when :func:`find_rule` first meets a class.
    """
    if not qualnames:
        raise TypeError("register_lazy_rule needs at least one class name")
    for q in qualnames:
        if not isinstance(q, str) or "." not in q:
            raise TypeError(f"register_lazy_rule expects 'module.ClassName' strings, got {q!r}")

    def deco(fn):
        for q in qualnames:
            _LAZY_BY_NAME[q] = Rule(fn, covers_children, needs_output)
        _LAZY_MEMO.clear()
        return fn

    return deco


def register_rule_provider(provider: Provider) -> Provider:
    """Add ``provider(cls) -> Rule | None``, asked (once per class) for a class with no other rule.

    It must not import the class's library; an exception in it is a warning and a ``None``.
    """
    if not callable(provider):
        raise TypeError(f"register_rule_provider expects a callable cls -> Rule | None, got {provider!r}")
    _PROVIDERS.append(provider)
    _LAZY_MEMO.clear()
    return provider


def _lazy_rule(cls: type) -> Optional[Rule]:
    """``cls``'s own lazy rule (not a base's), memoized."""
    try:
        return _LAZY_MEMO[cls]
    except KeyError:
        pass
    rule = _LAZY_BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
    for provider in _PROVIDERS:
        if rule is not None:
            break
        try:
            rule = provider(cls)
        except Exception as e:  # a library version we do not know: its modules use the fallback
            warnings.warn(f"ftdfast: the rule provider {getattr(provider, '__name__', provider)!r} failed on "
                          f"{cls.__module__}.{cls.__qualname__} ({type(e).__name__}: {e}); "
                          "its modules use the torch.func fallback", stacklevel=3)
            rule = None
        if rule is not None and not isinstance(rule, Rule):
            raise TypeError(f"rule provider {provider!r} returned {rule!r} for {cls.__qualname__}; "
                            "it must return a registry.Rule or None")
    _LAZY_MEMO[cls] = rule
    return rule


def find_rule(module: nn.Module) -> Optional[Rule]:
    """The rule for ``module``'s type: its own, or a base class's if the subclass keeps the base ``forward``.

    Along the class's MRO, the first class with a rule decides: its eager rule
    (:func:`register_rule`), else its lazy one (:func:`register_lazy_rule`, providers).
    A subclass that overrides ``forward`` computes something else, so it gets no
    inherited rule (it goes to the fallback unless it registers its own).
    """
    cls = type(module)
    for base in cls.__mro__:
        rule = _RULES.get(base)
        if rule is None and base is not nn.Module and isinstance(base, type) and issubclass(base, nn.Module):
            rule = _lazy_rule(base)
        if rule is not None:
            return rule if base is cls or cls.forward is base.forward else None
    return None

