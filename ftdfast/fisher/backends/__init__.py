"""Fisher backends: ``rules`` (default), ``func``, ``loop`` (the reference), ``legacy`` and ``native``."""
from .base import Backend, ParamTable
from .func import FuncBackend
from .legacy import LegacyBackend
from .loop import LoopBackend
from .rules import RulesBackend

BACKENDS = {
    "rules": RulesBackend,
    "native": RulesBackend,
    "func": FuncBackend,
    "loop": LoopBackend,
    "legacy": LegacyBackend,
}

__all__ = ["BACKENDS", "Backend", "ParamTable", "FuncBackend", "LegacyBackend", "LoopBackend", "RulesBackend"]
