"""ftdfast: the exact diagonal Fisher of PyTorch models, Fisher task distances and task-aware NAS.

The native extension (``ftdfast._C``) is optional: without it every path runs in
pure PyTorch (see :mod:`ftdfast._ext`).
"""
__version__ = "0.1.0"

from .fisher import Call, FisherDiagonal, find_rule, fisher_diagonal, register_rule  # noqa: E402

__all__ = ["__version__", "fisher_diagonal", "FisherDiagonal", "register_rule", "find_rule", "Call"]
