"""Final evaluation of TA-NAS against its baselines, in one run and with equal search budgets.

``compare(target, dictionary, baselines, budget, ...)`` runs, for one target task:

- TA-NAS: the task-aware search in the closest baseline's restricted space (distances included);
- FUSE in the general space (no task distance);
- random search in the general space (:func:`~ftdfast.nas.tanas.random_search`);

trains each found cell's network from scratch on the target's training data
(``train_model``, the same epochs for all, once per seed of ``final_seeds``) and reports its test accuracy
(mean, std and per seed), parameters (millions), search time and, for TA-NAS, the task-distance time apart from
it, next to the hand-designed networks (VGG-16, ResNet-18, DenseNet-121) trained the same way. Every finished
row is stored in ``out_dir`` (atomic JSON), so a rerun resumes. The table has the shape of the paper's Tables 1-4.

Seeds: each method's search seed is ``derive_seed(seed, <method>)`` (``"ta_nas"``, ``"fuse_general"``,
``"random_general"``), so the methods draw independent candidate pools, and none shares a pool with a
dictionary baseline (those use ``derive_seed(seed, "baseline", ...)``).
"""
from __future__ import annotations

import json
import math
import os
import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..atomic import atomic_write_text
from ..train import TrainConfig, seed_everything, train_model
from .dictionary import TaskDictionary
from .search import Budget, SearchOutcome, fuse_search, random_search
from .seeds import derive_seed
from .tanas import TaskAwareNAS

HAND_DESIGNED = ("vgg16", "resnet18", "densenet121")


def final_accuracy(build: Callable[[], torch.nn.Module], target, epochs: int, *, seeds: Sequence[int] = (0,),
                   device=None, progress: bool = True) -> Dict[str, Any]:
    """For each seed: ``seed_everything(seed)``, ``build()`` a fresh network, train it on the target for
    ``epochs`` (shuffled by the seed) and score it on the test split. Returns the mean, the std over seeds
    (None for one seed), the per-seed accuracies, parameters (millions) and training seconds (total)."""
    if not seeds:
        raise ValueError("final_accuracy needs at least one seed")
    accs, secs, params = [], 0.0, 0
    for s in seeds:
        seed_everything(int(s))
        model = build()
        result = train_model(model, target, TrainConfig(epochs=epochs), seed=int(s), device=device,
                             progress=progress)
        accs.append(float(result.test_accuracy))
        secs += result.seconds
        params = sum(p.numel() for p in model.parameters())
    return {"test_accuracy": statistics.fmean(accs),
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "test_accuracy_per_seed": accs, "final_seeds": [int(s) for s in seeds],
            "params_m": params / 1e6, "train_seconds": secs}


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
            epochs: int = 3, seed: int = 0, final_seeds: Sequence[int] = (0,),
            hand_designed: Sequence[str] = HAND_DESIGNED, hand_width: float = 1.0, device=None,
            out_dir: Optional[str] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """The comparison rows for ``target`` (see the module docstring); ``out_dir`` makes it resumable.

    ``seed``: the user seed the searches derive theirs from; ``final_seeds``: the seeds of the final
    training of every found cell and hand-designed network."""
    from ..models import build_model
    budget = budget or Budget()
    final_seeds = [int(s) for s in final_seeds]
    in_ch = int(target.x_train.shape[1])
    key = {"budget": budget.to_dict(), "epochs": epochs, "seed": seed, "final_seeds": final_seeds}
    rows: List[Dict[str, Any]] = []

    def cached(name: str, compute) -> Dict[str, Any]:
        path = os.path.join(out_dir, f"row_{name}.json") if out_dir else None
        if path:
            row = _load_row(path)
            if row is not None and all(row.get(k) == v for k, v in key.items()):
                return row
        row = compute()
        row.update(key)
        if path:
            atomic_write_text(path, json.dumps(row, indent=1) + "\n")
        return row

    def searched(method: str, outcome_fn) -> Dict[str, Any]:
        outcome: SearchOutcome = outcome_fn()
        dist = outcome.distance_seconds
        row = {"method": method, "genotype": outcome.genotype.to_dict(), "search_seed": outcome.seed,
               "search_seconds": outcome.seconds - (dist or 0.0), "distance_seconds": dist,
               "closest": outcome.closest, "distances": outcome.distances, "distance_std": outcome.distance_std,
               "distance_seeds": len(dictionary.distance["seeds"]) if outcome.distances else None}
        row.update(final_accuracy(
            lambda: outcome.space.network(outcome.genotype, channels=budget.channels, layers=budget.layers,
                                          num_classes=int(target.num_classes), in_channels=in_ch),
            target, epochs, seeds=final_seeds, device=device, progress=progress))
        return row

    ckpt = os.path.join(out_dir, f"search-{seed}") if out_dir else None
    general = dictionary.general_space
    rows.append(cached("ta_nas", lambda: searched("TA-NAS (ours)", lambda: TaskAwareNAS(dictionary, baselines).search(
        target, budget, seed=derive_seed(seed, "ta_nas"), device=device, progress=progress, checkpoint_dir=ckpt))))
    rows.append(cached("fuse_general", lambda: searched("FUSE, general space", lambda: fuse_search(
        general, target, budget, seed=derive_seed(seed, "fuse_general"), device=device, progress=progress))))
    rows.append(cached("random_general", lambda: searched("Random search, general space", lambda: random_search(
        general, target, budget, seed=derive_seed(seed, "random_general"), device=device, progress=progress))))
    size = int(target.x_train.shape[-1])
    for arch in hand_designed:
        def hand(arch=arch):
            opts = {"width": hand_width} if hand_width != 1.0 else {}
            row = {"method": arch + (f" (width {hand_width})" if opts else ""), "genotype": None,
                   "search_seconds": None, "distance_seconds": None}
            row.update(final_accuracy(
                lambda: build_model(arch, in_channels=in_ch, num_classes=int(target.num_classes), input_size=size,
                                    **opts), target, epochs, seeds=final_seeds, device=device, progress=progress))
            return row
        rows.append(cached(f"hand_{arch}", hand))
    return rows


def _pct(v: Optional[float]) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def to_markdown(rows: Sequence[Dict[str, Any]], title: str = "") -> str:
    """The paper's table shape: architecture, test accuracy (%), parameters (M), search time."""
    lines = ([f"### {title}", ""] if title else []) + [
        "| architecture | test accuracy (%) | ± std (final seeds) | params (M) | search time (s) | distance time (s) |",
        "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        st, dt = r.get("search_seconds"), r.get("distance_seconds")
        std = r.get("test_accuracy_std")
        n = len(r.get("test_accuracy_per_seed") or [None])
        lines.append(f"| {r['method']} | {_pct(r.get('test_accuracy'))} | "
                     f"{'n/a (1 seed)' if std is None else f'{100 * std:.2f} ({n} seeds)'} | {r['params_m']:.3f} | "
                     f"{'-' if st is None else f'{st:.0f}'} | {'-' if dt is None else f'{dt:.0f}'} |")
    ta = next((r for r in rows if r.get("closest")), None)
    if ta:
        d = ta["distances"]
        std = ta.get("distance_std") or {}
        one = ta.get("distance_seeds") == 1

        def spread(k):
            return "± n/a" if one or std.get(k) is None else f"± {std[k]:.3f}"
        lines += ["", f"Closest baseline: **{ta['closest']}**; distances to the target: " + ", ".join(
            f"{k} {v:.3f} {spread(k)}" for k, v in sorted(d.items(), key=lambda kv: kv[1]))
            + (" (one distance seed: no spread)." if one else f" (mean ± std over {ta.get('distance_seeds')} "
               "distance seeds).")]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ several search seeds
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def _t_half(values: Sequence[float]) -> float:
    """Half-width of the 95% t interval of the mean of ``values`` (at least two)."""
    t = _T975[len(values) - 2] if len(values) - 1 <= len(_T975) else 1.96
    return t * statistics.stdev(values) / math.sqrt(len(values))


def summarize_runs(folders: Sequence[str], title: str = "") -> str:
    """One markdown table over several ``compare`` runs (one folder of ``row_*.json`` per search seed).

    Per method: the mean test accuracy over every (search seed, final seed) pair, their std, and a 95% t
    interval of the mean with the search seeds as the independent units (each seed's mean over its final
    seeds); hand-designed rows (no search) use their final seeds as the units. Search and distance times are
    means over search seeds. "n/a" where there is one unit only.

    Below the table, for every other searched method found in the same folders as TA-NAS: the difference
    TA-NAS minus that method paired by search seed (one folder = one seed), its 95% t interval and how many
    seeds TA-NAS won, with a verdict: "TA-NAS ahead" or "behind" when the interval excludes 0, else "not
    separated" (with 3 seeds, t = 4.30: a method can lose every seed and still not be separated).
    """
    order = {"row_ta_nas.json": 0, "row_fuse_general.json": 1, "row_random_general.json": 2}
    by_method: Dict[str, List[Dict[str, Any]]] = {}
    by_folder: List[Dict[str, float]] = []        # per folder (search seed): method -> mean over final seeds
    for folder in folders:
        seen: Dict[str, float] = {}
        for name in sorted(os.listdir(folder), key=lambda n: (order.get(n, 3), n)):
            if name.startswith("row_") and name.endswith(".json"):
                row = _load_row(os.path.join(folder, name))
                if row is not None:
                    by_method.setdefault(row["method"], []).append(row)
                    if row.get("genotype") is not None:
                        seen[row["method"]] = statistics.fmean(row["test_accuracy_per_seed"])
        by_folder.append(seen)
    if not by_method:
        raise ValueError(f"no row_*.json files in {list(folders)}: run `ftdfast search --out FOLDER` first")
    lines = ([f"### {title}", ""] if title else []) + [
        "| architecture | search seeds | final seeds | test accuracy (%), mean ± std | 95% interval | "
        "search time (s) | distance time (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method, rows in by_method.items():
        values = [a for r in rows for a in r["test_accuracy_per_seed"]]
        searched = rows[0].get("genotype") is not None
        units = [statistics.fmean(r["test_accuracy_per_seed"]) for r in rows] if searched else values
        mean = statistics.fmean(values)
        std = f"{100 * statistics.stdev(values):.2f}" if len(values) > 1 else "n/a"
        if len(units) > 1:
            half = _t_half(units)
            m = statistics.fmean(units)
            ci = f"{max(0.0, 100 * (m - half)):.2f} to {min(100.0, 100 * (m + half)):.2f}"
        else:
            ci = "n/a"

        def avg(key):
            v = [r[key] for r in rows if r.get(key) is not None]
            return f"{statistics.fmean(v):.0f}" if v else "-"
        lines.append(f"| {method} | {len(rows) if searched else '-'} | {len(rows[0]['test_accuracy_per_seed'])} | "
                     f"{100 * mean:.2f} ± {std} | {ci} | {avg('search_seconds')} | {avg('distance_seconds')} |")
    return "\n".join(lines + _paired_lines(by_folder)) + "\n"


def _paired_lines(by_folder: Sequence[Dict[str, float]], ours: str = "TA-NAS (ours)") -> List[str]:
    """TA-NAS minus each other searched method, paired by search seed (see :func:`summarize_runs`)."""
    others = sorted({m for seen in by_folder for m in seen if m != ours})
    out: List[str] = []
    for m in others:
        diffs = [seen[ours] - seen[m] for seen in by_folder if ours in seen and m in seen]
        if not diffs:
            continue
        mean = statistics.fmean(diffs)
        wins = sum(d > 0 for d in diffs)
        if len(diffs) > 1:
            half = _t_half(diffs)
            lo, hi = mean - half, mean + half
            verdict = ("TA-NAS ahead" if lo > 0 else "TA-NAS behind" if hi < 0
                       else "not separated, the interval holds 0")
            ci = f"95% interval {100 * lo:+.2f} to {100 * hi:+.2f}: {verdict}"
        else:
            ci = "one search seed: no interval"
        out.append(f"- TA-NAS minus {m}, paired by search seed: {100 * mean:+.2f} points ({ci}; TA-NAS higher "
                   f"in {wins} of {len(diffs)} seeds)")
    return ([""] + out) if out else []
