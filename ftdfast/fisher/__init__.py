"""The diagonal Fisher: API, per-layer rules, backends and the result type."""
from .api import check_eval_mode, fisher_diagonal
from .registry import Call, find_rule, register_rule
from .result import FisherDiagonal

__all__ = ["fisher_diagonal", "FisherDiagonal", "register_rule", "find_rule", "Call", "check_eval_mode"]
