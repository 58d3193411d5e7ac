"""Task2Vec-style probe embedding (Achille, Lam, Tewari, Ravichandran, Maji, Fowlkes, Soatto, Perona, ICCV 2019).

One fixed probe network embeds every task: its head is fitted on the task's data (a linear head on the
probe's penultimate features, :func:`~ftdfast.transfer.probe.fit_linear_head`), then the diagonal Fisher
of the probe's body on that data is taken (label-free, ``fisher="exact"``: the expectation over the probe's
own predictive distribution, which the paper estimates by sampling), and each filter's (output unit's)
Fisher is averaged over its weights: the embedding has one entry per filter of every weight tensor of the
body (dim >= 2; biases and the head left out). Two embeddings e_a, e_b are compared by the normalized
cosine distance of the paper:

    d(a, b) = 1 - cos( e_a / (e_a + e_b), e_b / (e_a + e_b) )        (elementwise division)

over the entries where e_a + e_b > 0. Lower is better. Needs the sources' own data (sources given as
``TaskData``): the embedding of a source is that of its task, not of its trained network.

Options: ``probe`` (an ``nn.Module`` used as it is, e.g. a network trained on a broad task; default: a
re-initialized copy, seeded with ``probe_seed``, of the first source's network: a random-feature probe),
``probe_head`` (its head's name; default the last ``nn.Linear``), ``max_samples`` (training samples of
each task the head and the Fisher use).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ...fisher import fisher_diagonal
from ..context import Source, forward_with_features, in_module
from ..probe import find_head, fit_linear_head, reinitialized, with_head
from .base import Estimator, register

MAX_SAMPLES = 1000


def embedding(probe: nn.Module, head: str, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The task embedding of ``(x (n, ...), y (n,))`` with ``probe`` (head ``head``): float64 (filters,)."""
    feats, _ = forward_with_features(probe, head, x)
    width = int(y.max()) + 1
    net = with_head(probe, head, fit_linear_head(feats, y.cpu().numpy(), width))
    F = fisher_diagonal(net, (x, y), loss="cross_entropy", fisher="exact", progress=False)
    parts = [t.reshape(t.shape[0], -1).mean(1) for n, t in F.items() if not in_module(n, head) and t.dim() >= 2]
    return torch.cat(parts).double().cpu().numpy()


def normalized_cosine(e_a: np.ndarray, e_b: np.ndarray) -> float:
    """``1 - cos(e_a / (e_a + e_b), e_b / (e_a + e_b))`` over the entries with ``e_a + e_b > 0``, in [0, 1]."""
    s = e_a + e_b
    keep = s > 0
    if not keep.any():
        raise ValueError("both task embeddings are all zero: the probe's Fisher vanishes on both tasks")
    u, v = e_a[keep] / s[keep], e_b[keep] / s[keep]
    return float(min(1.0, max(0.0, 1.0 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))))


@register
class Task2Vec(Estimator):
    """Normalized cosine distance of probe-Fisher embeddings of the source's task and the target. Lower is better."""

    name = "task2vec"
    lower_is_better = True
    needs = frozenset({"source_data"})

    def __init__(self, *, probe: Optional[nn.Module] = None, probe_head: Optional[str] = None, probe_seed: int = 0,
                 max_samples: int = MAX_SAMPLES):
        if probe is not None and not isinstance(probe, nn.Module):
            raise TypeError(f"task2vec: probe must be an nn.Module, got {type(probe).__name__}")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(f"task2vec: max_samples must be an int >= 2, got {max_samples!r}")
        self.probe, self.probe_seed, self.max_samples = probe, int(probe_seed), max_samples
        self.probe_head = find_head(probe, probe_head, what="the probe") if probe is not None else probe_head
        self.options = {"probe": None if probe is None else type(probe).__name__, "probe_head": probe_head,
                        "probe_seed": probe_seed, "max_samples": max_samples}

    def _probe(self, context):
        if self.probe is not None:
            return self.probe.eval(), self.probe_head
        first = context.sources[0]
        return context.cached(("task2vec probe", first.name, self.probe_seed), lambda: (
            reinitialized(first.model, first.head, first.width, self.probe_seed).eval(), first.head))

    def score(self, source: Source, target, context) -> float:
        if source.data is None:
            raise ValueError(f"task2vec embeds the sources' tasks and needs their data, but source {source.name!r} "
                             "is a trained network only: pass sources as name -> TaskData, or use an estimator "
                             "that reads the source network (ftd, leep, logme, nce, hscore)")
        probe, head = self._probe(context)
        k = self.max_samples
        key = ("task2vec", id(probe), k)
        x_t, y_t = context.data("train")
        e_b = context.cached(key + ("<target>",), lambda: embedding(probe, head, x_t[:k], y_t[:k]))
        e_a = context.cached(key + (source.name,), lambda: embedding(
            probe, head, source.data.x_train[:k], source.data.y_train[:k]))
        return normalized_cosine(e_a, e_b)
