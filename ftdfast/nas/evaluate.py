"""Final evaluation of TA-NAS against its baselines, in one run and with equal search budgets.

``compare(target, dictionary, baselines, budget, ...)`` runs, for one target task:

- TA-NAS: the task-aware search in the closest baseline's restricted space (distances included);
- FUSE in the general space (no task distance);
- random search in the general space (:func:`~ftdfast.nas.tanas.random_search`);

trains each found cell's network from scratch on the target's training data
(``train_model``, the same epochs for all) and reports its test accuracy, parameters (millions)
and search time, next to the hand-designed networks (VGG-16, ResNet-18, DenseNet-121) trained the
same way. Every finished row is stored in ``out_dir`` (atomic JSON), so a rerun resumes.
The table has the shape of the paper's Tables 1-4.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..atomic import atomic_write_text
from ..train import TrainConfig, seed_everything, train_model
from .network import Network
from .tanas import Budget, SearchOutcome, TaskAwareNAS, TaskDictionary, fuse_search, random_search

HAND_DESIGNED = ("vgg16", "resnet18", "densenet121")


def final_accuracy(model: torch.nn.Module, target, epochs: int, *, seed: int = 0, device=None,
                   progress: bool = True) -> Dict[str, Any]:
    """Train ``model`` (fresh) on the target for ``epochs`` and report test accuracy and parameters."""
    result = train_model(model, target, TrainConfig(epochs=epochs), seed=seed, device=device, progress=progress)
    params = sum(p.numel() for p in model.parameters())
    return {"test_accuracy": result.test_accuracy, "params_m": params / 1e6, "train_seconds": result.seconds}


def _load_row(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        import warnings
        warnings.warn(f"ftdfast: {path} is unreadable; recomputing that row", RuntimeWarning, stacklevel=3)
        return None


def compare(target, dictionary: TaskDictionary, baselines: Sequence, budget: Optional[Budget] = None, *,
            epochs: int = 3, seed: int = 0, hand_designed: Sequence[str] = HAND_DESIGNED, hand_width: float = 1.0,
            device=None, out_dir: Optional[str] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """The comparison rows for ``target`` (see the module docstring); ``out_dir`` makes it resumable."""
    from ..models import build_model
    budget = budget or Budget()
    in_ch = int(target.x_train.shape[1])
    rows: List[Dict[str, Any]] = []

    def cached(name: str, compute) -> Dict[str, Any]:
        path = os.path.join(out_dir, f"row_{name}.json") if out_dir else None
        if path:
            row = _load_row(path)
            if row is not None and row.get("budget") == budget.to_dict() and row.get("epochs") == epochs:
                return row
        row = compute()
        row.update(budget=budget.to_dict(), epochs=epochs)
        if path:
            atomic_write_text(path, json.dumps(row, indent=1) + "\n")
        return row

    def searched(method: str, outcome_fn) -> Dict[str, Any]:
        outcome: SearchOutcome = outcome_fn()
        seed_everything(seed)
        net = Network(outcome.genotype, budget.channels, budget.layers, int(target.num_classes), in_ch)
        row = {"method": method, "genotype": outcome.genotype.to_dict(), "search_seconds": outcome.seconds,
               "closest": outcome.closest, "distances": outcome.distances, "distance_std": outcome.distance_std}
        row.update(final_accuracy(net, target, epochs, seed=seed, device=device, progress=progress))
        return row

    ckpt = os.path.join(out_dir, "search") if out_dir else None
    rows.append(cached("ta_nas", lambda: searched("TA-NAS (ours)", lambda: TaskAwareNAS(dictionary, baselines).search(
        target, budget, seed=seed, device=device, progress=progress, checkpoint_dir=ckpt))))
    rows.append(cached("fuse_general", lambda: searched("FUSE, general space", lambda: fuse_search(
        dictionary.general_space, target, budget, seed=seed, device=device, progress=progress))))
    rows.append(cached("random_general", lambda: searched("Random search, general space", lambda: random_search(
        dictionary.general_space, target, budget, seed=seed, device=device, progress=progress))))
    size = int(target.x_train.shape[-1])
    for arch in hand_designed:
        def hand(arch=arch):
            seed_everything(seed)
            opts = {"width": hand_width} if hand_width != 1.0 else {}
            net = build_model(arch, in_channels=in_ch, num_classes=int(target.num_classes), input_size=size, **opts)
            row = {"method": arch + (f" (width {hand_width})" if opts else ""), "genotype": None,
                   "search_seconds": None}
            row.update(final_accuracy(net, target, epochs, seed=seed, device=device, progress=progress))
            return row
        rows.append(cached(f"hand_{arch}", hand))
    return rows


def to_markdown(rows: Sequence[Dict[str, Any]], title: str = "") -> str:
    """The paper's table shape: architecture, test accuracy (%), parameters (M), search time."""
    lines = ([f"### {title}", ""] if title else []) + [
        "| architecture | test accuracy (%) | params (M) | search time (s) |", "|---|---:|---:|---:|"]
    for r in rows:
        acc = r.get("test_accuracy")
        st = r.get("search_seconds")
        lines.append(f"| {r['method']} | {'-' if acc is None else f'{100 * acc:.2f}'} | {r['params_m']:.3f} | "
                     f"{'-' if st is None else f'{st:.0f}'} |")
    ta = next((r for r in rows if r.get("closest")), None)
    if ta:
        d = ta["distances"]
        std = ta.get("distance_std") or {}
        lines += ["", f"Closest baseline: **{ta['closest']}**; distances to the target: " + ", ".join(
            f"{k} {v:.3f} ± " + ("n/a" if std.get(k) is None else f"{std[k]:.3f}")
            for k, v in sorted(d.items(), key=lambda kv: kv[1])) + "."]
    return "\n".join(lines) + "\n"
