"""The model registry: ``register_model(name)`` and ``build_model(arch, ...)``."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import torch.nn as nn

#: The registered architecture names, in registration order (kept up to date by :func:`register_model`).
ARCHS: List[str] = []

_FACTORIES: Dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``factory(*, in_channels, num_classes, input_size, **options) -> nn.Module``.

    Registering a name twice replaces the factory (handy for experiments); the name
    stays in :data:`ARCHS` once.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model needs a non-empty string name, got {name!r}")

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(factory):
            raise TypeError(f"register_model({name!r}) decorates a callable, got {type(factory).__name__}")
        if name not in _FACTORIES:
            ARCHS.append(name)
        _FACTORIES[name] = factory
        return factory

    return deco


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"build_model: {what} must be a positive int, got {value!r}")
    return value


def build_model(arch: str, *, in_channels: int, num_classes: int, input_size: int, **options: Any) -> nn.Module:
    """Build a registered network for inputs ``(n, in_channels, input_size, input_size)``.

    Classifiers return logits ``(n, num_classes)``; the ``"autoencoder"`` returns
    ``(n, num_classes, h, w)`` (the input's ``h, w``).  ``options`` go to the factory,
    e.g. ``width=0.25`` scales the channels of vgg16/resnet18/densenet121/autoencoder.
    The returned module carries ``build_args`` (a dict: ``arch`` and every argument),
    enough to rebuild it with ``build_model(**model.build_args)``.
    """
    if arch not in _FACTORIES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)} "
                         f"(or add one with ftdfast.models.register_model)")
    _positive_int("in_channels", in_channels)
    _positive_int("num_classes", num_classes)
    _positive_int("input_size", input_size)
    model = _FACTORIES[arch](in_channels=in_channels, num_classes=num_classes, input_size=input_size, **options)
    model.build_args = dict(arch=arch, in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                            **options)
    return model


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1; checks ``width``."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a positive finite number (1.0 = the standard network), got {width!r}")
    return max(1, int(round(channels * width)))


def num_halvings(size: int, limit: int) -> int:
    """How many 2x2 stride-2 poolings ``size`` takes before reaching 1 (floor halving), at most ``limit``."""
    k = 0
    while size >= 2 and k < limit:
        size //= 2
        k += 1
    return k
