"""Reading sources and estimators from the command line, and showing rankings: a text table, a bar chart.

Used by ``ftdfast transfer rank`` (:mod:`ftdfast.cli`); usable on its own.
"""
from __future__ import annotations

import io
import os
import re
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..cache import MAGIC, _decode, read_payload
from ..distance.plots import _matplotlib, _save
from . import estimators
from .estimators import Estimator
from .rank import Ranking

_SPEC = re.compile(r"^([A-Za-z0-9_]+)(?:\[(.*)\])?$")
MODEL_FORMAT_HINT = ("a trained-model file is a dict {'build': {...}, 'state_dict': {...}}: an entry of ftdfast's "
                     "cache (<cache>/model/*.pt, written by get_trained) or torch.save({'build': dict(arch=..., "
                     "in_channels=..., num_classes=..., input_size=...), 'state_dict': model.state_dict()}, path)")


def parse_method(spec: str) -> Estimator:
    """An estimator from its label: ``"leep"``, ``"ftd[head=probe,fisher=exact]"`` (the form
    :attr:`Estimator.label` prints). Values that read as ints are ints, the rest strings."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ValueError(f"method {spec!r} must look like NAME or NAME[option=value,...], e.g. ftd[head=probe]")
    options: Dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (m.group(2) or "").split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"method {spec!r}: option {part!r} must be option=value")
        options[key.strip()] = int(value) if re.fullmatch(r"-?\d+", value.strip()) else value.strip()
    return estimators.get(m.group(1), **options)


def load_model_file(path: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """``(model in eval mode, meta)`` from a trained-model file (see :data:`MODEL_FORMAT_HINT`); ``meta`` is the
    cache entry's (``task``, ``arch``, ``seed``) or empty."""
    from ..models import build_model
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (--source-model)")
    with open(path, "rb") as f:
        raw = f.read()
    meta: Dict[str, Any] = {}
    try:
        if raw.startswith(MAGIC):
            payload = read_payload(raw)
            obj, meta = _decode(payload.get("obj")), _decode(payload.get("meta")) or {}
        else:
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged entry (CorruptEntry) or whatever a foreign file raises
        raise ValueError(f"{path}: not a readable trained-model file ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0]}); {MODEL_FORMAT_HINT}") from None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("build"), Mapping) \
            or not isinstance(obj.get("state_dict"), Mapping):
        got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{path}: holds {got}, not a trained model; {MODEL_FORMAT_HINT}")
    try:
        model = build_model(**obj["build"])
        model.load_state_dict(obj["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"{path}: its build {dict(obj['build'])} and state_dict do not make a model: {e}") from None
    return model.eval(), dict(meta)


def format_table(rankings: Mapping[str, Ranking], precision: int = 4) -> str:
    """Plain text: for each method, the sources best first with score (± std over seeds where there is one)."""
    lines = []
    for label, r in rankings.items():
        better = "lower" if r.lower_is_better else "higher"
        lines.append(f"{label} ({better} is better, {r.seconds:.2f} s)")
        width = max(len(n) for n in r.order)
        for i, name in enumerate(r.order, 1):
            std = r.std.get(name)
            spread = f" ± {std:.{precision}f}" if std is not None else ""
            lines.append(f"  {i:>2}. {name:<{width}}  {r.scores[name]:.{precision}f}{spread}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_rankings(rankings: Mapping[str, Ranking], path: str) -> str:
    """A bar chart (PNG, or the format of ``path``'s extension), one panel per method: each source's score in the
    order the sources were given, error bars = std over seeds, the best source's bar dark. Written atomically."""
    Figure, FigureCanvasAgg = _matplotlib()
    n = len(rankings)
    names = list(next(iter(rankings.values())).scores)
    fig = Figure(figsize=(max(4.0, 0.5 * len(names) + 2.0) * min(n, 3), 3.6 * ((n + 2) // 3)))
    FigureCanvasAgg(fig)
    for k, (label, r) in enumerate(rankings.items()):
        ax = fig.add_subplot((n + 2) // 3, min(n, 3), k + 1)
        values = np.array([r.scores[s] for s in names])
        errs = np.array([r.std.get(s) or 0.0 for s in names])
        colors = ["#1f4e79" if s == r.order[0] else "#9dc3e6" for s in names]
        ax.bar(range(len(names)), values, yerr=errs if errs.any() else None, color=colors, capsize=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{label} ({'lower' if r.lower_is_better else 'higher'} is better)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
