"""Agreement of a source ranking with the measured transfer gain: Kendall tau, Spearman, top-1 hit, regret,
and bootstrap intervals over targets (the helpers of :mod:`benchmarks.evidence.transfer.compare`)."""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
from scipy import stats as sps


def agreement(scores: Mapping[str, float], gain: Mapping[str, float], lower_is_better: bool) -> Dict[str, float]:
    """How well ``scores`` (source -> estimator score) order the sources by ``gain`` (source -> measured gain).

    Scores are turned into "higher = predicted better" first. ``kendall`` is tau-b, ``spearman`` rho (both
    0 when the scores are all tied); ``top1`` is 1 when the top-scored source has the largest gain (ties in
    the gain count as a hit); ``regret`` is the best gain minus the gain of the top-scored source (points).
    """
    names = sorted(gain)
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"no score for sources {missing}")
    s = np.array([(-1.0 if lower_is_better else 1.0) * float(scores[n]) for n in names])
    g = np.array([float(gain[n]) for n in names])
    if np.ptp(s) == 0:
        tau = rho = 0.0
    else:
        tau = float(sps.kendalltau(s, g).statistic)
        rho = float(sps.spearmanr(s, g).statistic)
    pick = int(np.argmax(s))
    return {"kendall": tau, "spearman": rho, "top1": float(g[pick] >= g.max() - 1e-12),
            "regret": float(g.max() - g[pick]), "pick": names[pick]}


def bootstrap_mean(values: Sequence[float], reps: int = 10_000, seed: int = 0) -> Tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) of the mean over a percentile bootstrap of ``values``."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], reps: int = 10_000, seed: int = 0) -> Tuple[float, float, float]:
    """The mean of ``a - b`` (paired by index) with its percentile-bootstrap 95% interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return bootstrap_mean([x - y for x, y in zip(a, b)], reps, seed)


def summarize(per_target: List[Dict[str, float]], key: str) -> Dict[str, float]:
    mean, lo, hi = bootstrap_mean([r[key] for r in per_target])
    return {"mean": mean, "lo": lo, "hi": hi}
