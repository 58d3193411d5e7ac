"""Matching parameter names between models, Fisher diagonals, anchors and state_dicts.

Wrappers put a prefix before every name: ``DistributedDataParallel``/``DataParallel``
(``module.``), ``torch.compile`` (``_orig_mod.``), peft (``base_model.model.``), a user's
module holding a Hugging Face model as an attribute (``hf.``), and nestings of these. A
Fisher computed on one wrapping and a model (or state_dict) in another therefore differ by
one prefix. :func:`match_names` finds it: strip a prefix ``a`` shared by every needed name,
then add a prefix ``b``, so that every needed name meets one of the available ones. Models
are unwrapped first (:func:`ftdfast.fisher.parallel.unwrap_model`, as ``fisher_diagonal``
does). Anything else is an error that shows which names differ.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Collection, Dict, Iterable, List, Tuple

import torch
import torch.nn as nn

from ..fisher.parallel import unwrap_model

EXAMPLES = 3  # names shown per side in an error
# The parts of the prefixes that wrappers add. Stripping one prefix, or adding one, is any dotted prefix; replacing
# one by another (both non-empty) only where both consist of these: otherwise layer 0's Fisher would meet layer 1.
WRAPPER_PARTS = frozenset({"module", "_orig_mod", "base_model", "model", "hf"})


def _shared_prefixes(names: List[str]) -> List[str]:
    """Every dotted prefix ("", "a.", "a.b.", ...) that all ``names`` start with, shortest first; a name's
    last component is never part of one."""
    parts = [n.split(".")[:-1] for n in names]
    out = [""]
    for depth in range(min(len(p) for p in parts)):
        if any(p[depth] != parts[0][depth] for p in parts):
            break
        out.append(".".join(parts[0][:depth + 1]) + ".")
    return out


def _added_prefixes(rest: str, have: Collection[str]) -> List[str]:
    """Every ``b`` with ``b + rest`` in ``have``, ``b`` empty or ending with a dot."""
    return sorted(h[:len(h) - len(rest)] for h in have
                  if h.endswith(rest) and (len(h) == len(rest) or h[len(h) - len(rest) - 1] == "."))


def _allowed(a: str, b: str) -> bool:
    """Strip ``a`` then add ``b``: one of them empty, or both made of wrapper parts only."""
    return not a or not b or all(part in WRAPPER_PARTS for part in (a + b).split(".")[:-1])


def _describe(a: str, b: str) -> str:
    steps = ([f"stripping {a!r}"] if a else []) + ([f"adding {b!r}"] if b else [])
    return " and ".join(steps) if steps else "no prefix change"


def _show(names: Iterable[str]) -> str:
    names = list(names)
    text = ", ".join(repr(n) for n in names[:EXAMPLES])
    return text + (f", ... ({len(names)} in all)" if len(names) > EXAMPLES else "")


def match_names(need: Iterable[str], have: Iterable[str], need_what: str, have_what: str) -> Dict[str, str]:
    """Map every name of ``need`` onto one of ``have``, allowing one wrapper-prefix difference.

    Tries, shortest first, each dotted prefix ``a`` that every needed name starts with (``""``
    included): strip it, then add the one prefix ``b`` that makes every needed name one of
    ``have``. The first ``a`` for which some ``b`` works decides. Where both ``a`` and ``b``
    are non-empty (one wrapper's prefix replaced by another's, e.g. ``module.`` by
    ``_orig_mod.``), both must consist of :data:`WRAPPER_PARTS`. ``need_what`` and
    ``have_what`` name the two sides in errors (e.g. ``"fishers[1]"``, ``"the model"``).

    Returns:
        dict needed name -> available name (the identity where the names already meet).

    Raises:
        ValueError when no single prefix change maps every needed name (the message shows
        examples of the names left over on each side and the best prefix guess), or when
        several do (e.g. a Fisher of one block of a model with several identical blocks).
    """
    need, have = list(need), list(have)
    have_set = set(have)
    if all(n in have_set for n in need):
        return {n: n for n in need}
    best: Tuple[int, str, str] = (-1, "", "")
    for a in _shared_prefixes(need):
        rests = [n[len(a):] for n in need]
        found = [b for b in _added_prefixes(rests[0], have_set)
                 if _allowed(a, b) and all(b + r in have_set for r in rests)]
        if len(found) == 1:
            return {n: found[0] + r for n, r in zip(need, rests)}
        if len(found) > 1:
            raise ValueError(f"{need_what}'s names meet {have_what}'s in {len(found)} ways after stripping {a!r} "
                             f"(adding {_show(found)}): which part of {have_what} is meant is ambiguous; rename "
                             f"{need_what}'s entries to {have_what}'s full names")
        for r in dict.fromkeys(rests[:50]):  # the guess for the error: the change that maps the most names
            for b in filter(lambda b: _allowed(a, b), _added_prefixes(r, have_set)):
                hits = sum(b + x in have_set for x in rests)
                if hits > best[0]:
                    best = (hits, a, b)
    hits, a, b = best if best[0] > 0 else (0, "", "")
    left = [n for n in need if not n.startswith(a) or b + n[len(a):] not in have_set]
    used = {b + n[len(a):] for n in need if n.startswith(a)}
    unmet = [h for h in have if h not in used]
    hint = (f"; with {_describe(a, b)} {hits} of {len(need)} meet" if (a or b) else "")
    count = f" ({len(left)} such entries)" if len(left) > 1 else ""
    raise ValueError(f"{need_what} has an entry {left[0]!r} that {have_what} lacks{count}{hint}. Left over in "
                     f"{need_what}: {_show(left)}; in {have_what} without a counterpart: {_show(unmet) or 'none'}. "
                     "Names may differ only by one wrapper prefix (such as 'module.', '_orig_mod.', 'hf.', "
                     "'base_model.model.'): are both from the same model?")


def align_names(mapping: Mapping, names: Iterable[str], what: str, where: str) -> Dict[str, Any]:
    """``mapping`` as a dict whose keys are renamed onto ``names`` (:func:`match_names`: every key
    must meet one of ``names``, up to one wrapper-prefix change)."""
    rename = match_names(list(mapping), names, what, where)
    return {rename[k]: v for k, v in mapping.items()}


def pick_names(mapping: Mapping, names: Iterable[str], what: str, where: str) -> Dict[str, Any]:
    """The entries of ``mapping`` for each of ``names`` (e.g. a state_dict's parameters), keyed by
    ``names``: every one of ``names`` must meet a key of ``mapping`` up to one wrapper-prefix change."""
    rename = match_names(list(names), list(mapping), where, what)
    return {n: mapping[k] for n, k in rename.items()}


def parameters_of(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``named_parameters()`` of the unwrapped model (frozen ones included)."""
    return dict(unwrap_model(model).named_parameters())


def tensors_of(obj: Any, what: str) -> Dict[str, torch.Tensor]:
    """Parameters of an ``nn.Module`` (unwrapped) or the tensors of a mapping name -> tensor
    (a ``FisherDiagonal``, a state_dict). ``what`` names the argument in errors."""
    if isinstance(obj, nn.Module):
        return parameters_of(obj)
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be an nn.Module or a mapping name -> tensor (a FisherDiagonal, a state_dict), "
                        f"got {type(obj).__name__}")
    for name, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{what}[{name!r}] must be a tensor, got {type(v).__name__}")
    return dict(obj)


def check_fisher(fisher: Dict[str, torch.Tensor], params: Dict[str, torch.Tensor], what: str) -> None:
    """Every Fisher entry (named as in ``params``, see :func:`align_names`) has its parameter's shape,
    and is floating point, finite and >= 0."""
    for name, f in fisher.items():
        p = params[name]
        if f.shape != p.shape:
            raise ValueError(f"{what}[{name!r}] has shape {tuple(f.shape)} but the parameter has shape "
                             f"{tuple(p.shape)}")
        if not f.is_floating_point():
            raise TypeError(f"{what}[{name!r}] has dtype {f.dtype}; a Fisher diagonal is floating point")
        bad = ~torch.isfinite(f) | (f < 0)
        if bool(bad.any()):
            v = float(f.reshape(-1)[bad.reshape(-1).nonzero()[0]])
            raise ValueError(f"{what}[{name!r}] holds {v}: a Fisher diagonal is finite and >= 0")
