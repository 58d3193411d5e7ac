"""The one protocol every transferability estimator follows, and the registry that names them.

An estimator scores how well a source model should transfer to a target task:
``score(source, target, context) -> float``, with ``source`` a :class:`~ftdfast.transfer.context.Source`,
``target`` the target data (:class:`~ftdfast.transfer.context.TargetData` or a ``TaskData``) and
``context`` a :class:`~ftdfast.transfer.context.Context`, which computes what several sources or
estimators share once (source outputs and features on the target data, the target networks, Fishers).

A new estimator is one file in this package defining a subclass decorated with :func:`register`,
plus one import line in ``estimators/__init__.py``.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, FrozenSet, List, Tuple, Type

#: What an estimator may need from the context (its ``needs``):
#: ``outputs``: the source's softmax outputs on the target data; ``features``: the source's penultimate
#: features (the input of its head); ``fisher``: diagonal Fishers of source and target networks;
#: ``source_data``: the sources' own data (sources given as ``TaskData``).
NEEDS = ("outputs", "features", "fisher", "source_data")


class Estimator:
    """Base class. Subclasses set ``name``, ``lower_is_better``, ``needs`` and implement :meth:`score`.

    Options are keyword arguments of the constructor (each subclass documents and checks its own);
    ``options`` holds them as given, for records. Estimators whose value depends on seeds (target
    networks trained from several seeds) set ``seeded = True`` and implement :meth:`per_seed`; their
    :meth:`score` is the mean over seeds.
    """

    name: str = ""
    lower_is_better: bool = False
    needs: FrozenSet[str] = frozenset()
    seeded: bool = False

    def __init__(self, **options: Any):
        if options:
            raise TypeError(f"estimator {self.name!r} takes no options, got {sorted(options)}")
        self.options: Dict[str, Any] = {}

    def score(self, source, target, context) -> float:
        """The estimator's value for transferring ``source`` to ``target`` (see ``lower_is_better``)."""
        if self.seeded:
            values = self.per_seed(source, target, context)
            return float(sum(values) / len(values))
        raise NotImplementedError(f"estimator {self.name!r} does not implement score")

    def per_seed(self, source, target, context) -> List[float]:
        """One value per target-network seed (``context.seeds``); seeded estimators only."""
        return [self.score(source, target, context)]

    @property
    def label(self) -> str:
        """The name, followed by the options that differ from their defaults: ``ftd[head=probe,fisher=exact]``."""
        defaults = {k: p.default for k, p in inspect.signature(type(self).__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        changed = [f"{k}={v}" for k, v in self.options.items() if k in defaults and v != defaults[k]]
        return f"{self.name}[{','.join(changed)}]" if changed else self.name

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


REGISTRY: Dict[str, Type[Estimator]] = {}


def register(cls: Type[Estimator]) -> Type[Estimator]:
    """Class decorator: add an :class:`Estimator` subclass to the registry under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Estimator)):
        raise TypeError(f"register decorates an Estimator subclass, got {cls!r}")
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"estimator name {cls.name!r} is empty or already registered")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"estimator {cls.name!r} needs {sorted(unknown)}, not among {NEEDS}")
    REGISTRY[cls.name] = cls
    return cls


def names() -> Tuple[str, ...]:
    """The registered estimator names, in registration order."""
    return tuple(REGISTRY)


def get(name: str, **options: Any) -> Estimator:
    """The estimator registered as ``name``, built with ``options`` (e.g. ``get("ftd", head="probe")``)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown transferability estimator {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name](**options)


def check_choice(estimator: str, option: str, value: Any, choices: Tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError naming the estimator, the option and the choices."""
    if value not in choices:
        raise ValueError(f"{estimator}: {option}={value!r} is not one of {choices}")
    return value


