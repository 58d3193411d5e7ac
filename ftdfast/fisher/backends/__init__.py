"""Fisher backends by name, with the options a name sets.

``rules`` (per-layer closed forms in pure PyTorch) and ``native`` (the same backend
with the C++/CUDA kernels) are one class, :class:`RulesBackend`, with ``native``
as a flag; ``func``, ``loop`` (the reference: one batched forward, a backward per
sample), ``loop1`` (a batch of one per sample: a second reference) and ``legacy``
(the authors' batch-mean squares) are their own classes.
"""
from .base import Backend, ParamTable
from .func import FuncBackend
from .legacy import LegacyBackend
from .loop import LoopBackend, SingleSampleLoopBackend
from .hooks import RulesBackend

# name -> (class, keyword options)
BACKENDS = {
    "rules": (RulesBackend, {"native": False}),
    "native": (RulesBackend, {"native": True}),
    "func": (FuncBackend, {}),
    "loop": (LoopBackend, {}),
    "loop1": (SingleSampleLoopBackend, {}),
    "legacy": (LegacyBackend, {}),
}

__all__ = ["BACKENDS", "Backend", "ParamTable", "FuncBackend", "LegacyBackend", "LoopBackend",
           "SingleSampleLoopBackend", "RulesBackend"]
