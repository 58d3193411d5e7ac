"""Recognise a third-party class by the source of its ``forward``, never by its name.

transformers copies a layer class into every model file that uses it (``LlamaRMSNorm``,
``MistralRMSNorm``, ... with one body). :func:`forward_source_provider` makes a rule
provider (:func:`ftdfast.fisher.registry.register_rule_provider`) that gives a rule to
every class whose ``forward`` has the code of that body (comments and layout aside); a
class that computes something else does not match and keeps the fallback. The class is
only inspected when :func:`~ftdfast.fisher.registry.find_rule` first meets it.
"""
from __future__ import annotations

import inspect
import io
import textwrap
import tokenize
from typing import Callable, Dict, Optional, Tuple

from ..registry import Provider, Rule

_DROPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER}
_MARKS = {tokenize.NEWLINE: "\n", tokenize.INDENT: "{", tokenize.DEDENT: "}"}


def code_of(src: str) -> Optional[str]:
    """The tokens of ``src`` without comments, blank lines or layout: equal for the same code.

    String literals are kept whole (a ``#`` inside one is not a comment); block structure is
    kept as markers, whatever the indentation width. ``None`` if ``src`` does not tokenize cleanly.
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(textwrap.dedent(src)).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    if any(t.type == tokenize.ERRORTOKEN for t in tokens):  # e.g. an unclosed string (Python < 3.12)
        return None
    return " ".join(_MARKS.get(t.type, t.string) for t in tokens if t.type not in _DROPPED)


def is_transformers_modeling(name: str) -> bool:
    """``transformers.models.<model>.modeling_<model>``: where transformers defines its layer classes."""
    parts = name.split(".")
    return len(parts) == 4 and parts[:2] == ["transformers", "models"] and parts[3].startswith("modeling_")


def forward_source_provider(rules: Dict[str, Callable], suffixes: Tuple[str, ...],
                            in_module: Callable[[str], bool] = is_transformers_modeling) -> Provider:
    """A provider giving ``rules[forward source]`` to a class defined in a module ``in_module`` accepts,
    whose name ends with one of ``suffixes`` and whose own ``forward`` has that source's code."""
    by_code = {code_of(src): Rule(fn) for src, fn in rules.items()}
    if None in by_code:
        raise ValueError("forward_source_provider: a rule's forward source does not tokenize")

    def provider(cls) -> Optional[Rule]:
        if not (cls.__name__.endswith(suffixes) and in_module(cls.__module__) and "forward" in vars(cls)):
            return None
        try:
            src = inspect.getsource(vars(cls)["forward"])
        except (OSError, TypeError):
            return None
        code = code_of(src)
        return by_code.get(code) if code is not None else None

    provider.__name__ = "forward_source:" + "/".join(getattr(fn, "__name__", "?") for fn in rules.values())
    return provider
