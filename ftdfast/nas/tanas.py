"""Task-aware NAS (the paper's Algorithm 2): the search for a target task inside the space of its closest
baseline.

:class:`TaskAwareNAS` ``(dictionary, baselines).search(target, budget)`` computes the Fisher task distance from
every baseline of a :class:`~ftdfast.nas.dictionary.TaskDictionary` to the target
(``distance_matrix(..., targets=[target])``, with the dictionary's distance settings and caches), restricts the
general space to the closest baseline's cell (:meth:`SearchSpace.restrict_to`: its wiring and only its
operations) and runs :func:`~ftdfast.nas.search.fuse_search` there. The outcome records the distances and the
time they took (``distance_seconds``) apart from the whole call (``seconds``).
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from ..train import TrainConfig
from .dictionary import TaskDictionary
from .search import Budget, SearchOutcome, fuse_search


class TaskAwareNAS:
    """``TaskAwareNAS(dictionary, baselines).search(target, budget)``: the paper's Algorithm 2.

    ``baselines``: the dictionary's tasks as ``TaskData`` (rebuilt by the caller from the stored
    task definitions; their fingerprints are checked against the dictionary's), needed to train or
    load the baselines' epsilon-networks for the Fisher.
    """

    def __init__(self, dictionary: TaskDictionary, baselines: Sequence):
        self.dictionary = dictionary
        by_fp = {t.fingerprint(): t for t in baselines}
        missing = [e.name for e in dictionary.entries if e.fingerprint not in by_fp]
        if missing:
            raise ValueError(f"the data of baseline task(s) {missing} differs from what the dictionary was built "
                             "on (fingerprint mismatch): rebuild the tasks from the same dataset and seed, or "
                             "rebuild the dictionary")
        self.baselines = [by_fp[e.fingerprint] for e in dictionary.entries]

    def distances(self, target, *, device=None, progress: bool = True):
        """Mean and std over seeds of d[baseline -> target], as dicts name -> float."""
        from ..distance import distance_matrix
        shape = tuple(target.x_train.shape[1:])
        if shape != tuple(self.dictionary.input_shape):
            raise ValueError(f"the target task's inputs are {shape} but the dictionary's baselines take "
                             f"{tuple(self.dictionary.input_shape)}: use a dictionary built on data of the "
                             "target's shape")
        s = self.dictionary.distance
        tasks = list(self.baselines) + [target]
        K = len(self.baselines)
        m = distance_matrix(tasks, s["arch"], s["seeds"], config=TrainConfig.from_dict(s["config"]),
                            cache_dir=s.get("cache_dir"), device=device, targets=[K], progress=progress,
                            **s.get("fisher_options", {}))
        names = self.dictionary.names()
        return ({n: float(m.mean[i, K]) for i, n in enumerate(names)},
                {n: float(m.std[i, K]) if m.std[i, K] == m.std[i, K] else None  # one seed: no std
                 for i, n in enumerate(names)})

    def search(self, target, budget: Optional[Budget] = None, *, seed: int = 0, device=None,
               progress: bool = True, checkpoint_dir: Optional[str] = None) -> SearchOutcome:
        """Distances, closest baseline, restricted space, FUSE search (seeded by ``seed``); returns the outcome
        with the distances, the closest baseline, ``distance_seconds`` and ``seconds`` (distances included)."""
        budget = budget or Budget()
        t0 = time.perf_counter()
        mean, std = self.distances(target, device=device, progress=progress)
        t_dist = time.perf_counter() - t0
        closest = min(mean, key=lambda n: (mean[n], n))
        space = self.dictionary.general_space.restrict_to(self.dictionary[closest].genotype)
        out = fuse_search(space, target, budget, seed=seed, device=device, progress=progress,
                          checkpoint_dir=checkpoint_dir)
        out.distances, out.distance_std, out.closest = mean, std, closest
        out.distance_seconds = t_dist
        out.seconds = time.perf_counter() - t0
        return out
