"""Recognise a third-party class by the source of its ``forward``, never by its name.

transformers copies a layer class into every model file that uses it (``LlamaRMSNorm``,
``MistralRMSNorm``, ... with one body). A rule written for one body is registered for every
class whose ``forward`` has the same code (comments and whitespace aside); a class that
computes something else does not match and keeps the fallback.
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, Tuple

import torch.nn as nn

from ..registry import register_rule


def code_of(src: str) -> str:
    """Source without comments, blank lines or whitespace: equal for the same computation."""
    lines = [line.split("#", 1)[0] for line in src.splitlines()]
    return "".join("".join(line.split()) for line in lines)


def register_by_forward_source(module, rules: Dict[str, Callable], suffixes: Tuple[str, ...]) -> None:
    """In ``module``, register ``rules[code_of(forward source)]`` for each nn.Module class defined there
    whose name ends with one of ``suffixes`` and whose own ``forward`` matches a key."""
    by_code = {code_of(src): rule for src, rule in rules.items()}
    for name, cls in list(vars(module).items()):
        if not (isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module.__name__
                and "forward" in vars(cls) and name.endswith(suffixes)):
            continue
        try:
            src = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            continue
        rule = by_code.get(code_of(src))
        if rule is not None:
            register_rule(cls)(rule)


def is_transformers_modeling(name: str) -> bool:
    """``transformers.models.<model>.modeling_<model>``: where transformers defines its layer classes."""
    parts = name.split(".")
    return len(parts) == 4 and parts[:2] == ["transformers", "models"] and parts[3].startswith("modeling_")
