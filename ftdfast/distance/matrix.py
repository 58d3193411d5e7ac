"""The task-distance matrix over a task set (the paper's Algorithm 1, for every pair and seed).

For every seed s and task k, an epsilon-approximation network N_k^s is trained on k's training
data (one *training item*). For every target b and source a, the Fisher diagonal of N_a^s on b's
TEST data is computed (one *Fisher item*; F_bb with a = b). Then

    d_s[a, b] = (1/sqrt 2) * || sqrt(F_ab / tr F_ab) - sqrt(F_bb / tr F_bb) ||_2

(or the cosine baseline / the authors' legacy quantity). Rows are sources, columns targets.

Every item is stored in the on-disk cache as soon as it is done (atomic writes), so an
interrupted run, even a ``kill -9``, loses at most the item in flight, and a rerun resumes.
Under an initialized ``torch.distributed`` process group the items are spread over the ranks
(the shared cache is the meeting point) and rank 0 assembles the matrix.

Output width (``head``):

- ``"shared"`` (default): every network gets the same number of outputs, the largest class
  count in the task set, so every Fisher has the same shape and task b's labels are valid
  outputs of N_a. Unused outputs of a smaller task simply learn to stay low.
- ``"legacy"``: the authors' code: each network has its own task's class count; to evaluate
  N_a on b's labels its logits are zero-padded to b's width, and the Fisher head rows of the
  smaller network are zero-padded before the distance.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cache import Cache
from ..fisher import fisher_diagonal
from ..progress import progress_bar
from ..train import TrainConfig, get_trained
from .measures import cosine_distance, fisher_task_distance, legacy_distance
from .padding import pad_to_common
from .result import DistanceMatrix
from .task import METHODS

HEADS = ("shared", "legacy")
# fisher_diagonal options that change the result, hence part of a Fisher item's cache key
_FISHER_KEY_OPTIONS = ("fisher", "max_samples", "mc_samples", "dtype")


class PaddedLogits(nn.Module):
    """``net`` with its logits zero-padded to ``width`` outputs (the authors' legacy head policy).

    x (n, ...) -> (n, width): ``net(x)`` (n, k) followed by ``width - k`` zeros.
    """

    def __init__(self, net: nn.Module, width: int):
        super().__init__()
        self.net = net
        self.width = int(width)

    def forward(self, x):
        z = self.net(x)
        return F.pad(z, (0, self.width - z.shape[-1])) if z.shape[-1] < self.width else z


@dataclass(frozen=True)
class _Item:
    """One unit of work: a training (task, seed) or a Fisher pass (source net, target data, seed)."""
    kind: str            # "train" | "fisher"
    seed: int
    task: int            # the trained task (train) or the source a (fisher)
    target: int = -1     # the target b (fisher)


def _check_inputs(tasks, arch, seeds, method, head) -> List[int]:
    if not tasks:
        raise ValueError("distance_matrix: the task list is empty; give at least two TaskData "
                         "(e.g. [t.build(data) for t in ftdfast.tasks.paper_tasks('mnist', data)])")
    for k, t in enumerate(tasks):
        missing = [a for a in ("x_train", "y_train", "x_test", "y_test", "loss", "fingerprint") if not hasattr(t, a)]
        if missing:
            raise TypeError(f"distance_matrix: tasks[{k}] is a {type(t).__name__}, not a TaskData (lacks "
                            f"{', '.join(missing)}); build it first: task.build(data, seed)")
    names = [_task_name(t) for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"distance_matrix: task names must be unique; repeated: {dupes}")
    shapes = {tuple(t.x_test.shape[1:]) for t in tasks}
    if len(shapes) > 1:
        raise ValueError(f"distance_matrix: all tasks need the same input shape to share one architecture; "
                         f"got {sorted(shapes)}")
    losses = {t.loss for t in tasks}
    if len(losses) > 1:
        raise ValueError(f"distance_matrix: tasks mix losses {sorted(losses)}; a matrix needs one kind of task")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"distance_matrix: arch must be a model name such as 'small_cnn', got {arch!r}")
    if method not in METHODS:
        raise ValueError(f"distance_matrix: method must be one of {METHODS}, got {method!r}")
    if head not in HEADS:
        raise ValueError(f"distance_matrix: head must be one of {HEADS}, got {head!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"distance_matrix: seeds must be >= 1 (a count) or a list of seeds, got {seeds}")
        seeds = list(range(seeds))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"distance_matrix: seeds must be a non-empty list of distinct ints, got {seeds}")
    for k, t in enumerate(tasks):
        if len(t.y_test) == 0:
            raise ValueError(f"distance_matrix: task {names[k]!r} has no test samples; the Fisher needs them")
    return seeds


def _task_name(t) -> str:
    task = getattr(t, "task", None)
    return str(getattr(task, "name", None) or getattr(t, "name", None) or repr(task))


def distance_matrix(tasks: Sequence, arch: str, seeds=3, *, config: Optional[TrainConfig] = None,
                    epochs: Optional[int] = None, cache_dir: Optional[str] = None, device=None,
                    method: str = "fisher", head: str = "shared", targets: Optional[Sequence[int]] = None,
                    progress: bool = True, **fisher_options) -> DistanceMatrix:
    """The K x K task-distance matrix of ``tasks`` for one architecture, over seeds.

    Args:
        tasks: K ``TaskData`` (``Task.build(data, seed)``), sharing one input shape and loss.
        arch: a name from ``ftdfast.models.ARCHS`` (e.g. ``"small_cnn"``, ``"resnet18"``).
        seeds: a count S (seeds 0..S-1) or a list of seeds; seed s trains every N_k^s.
        config: training settings (``TrainConfig``); ``epochs`` overrides its epoch count.
        cache_dir: where trained networks and Fisher diagonals are kept (resumable); None keeps
            nothing on disk.
        device: where to train and compute the Fisher (default: CPU).
        method: ``"fisher"`` (the paper's distance), ``"cosine"`` (1 - cosine of the raw
            diagonals, the paper's baseline) or ``"legacy"`` (the authors' code: the square of the
            distance).
        head: ``"shared"`` or ``"legacy"`` output width (see the module docstring).
        targets: indices of the columns to compute (default: all); the other columns stay NaN.
            Task-aware NAS asks for one column: every baseline's distance to a new target.
        fisher_options: passed to ``fisher_diagonal`` (``backend``, ``batch_size``,
            ``max_samples``, ``fisher``, ...); the loss is the tasks' own.

    Returns:
        ``DistanceMatrix`` with ``per_seed`` (S, K, K), ``mean``/``std`` (K, K), rows = sources a,
        columns = targets b, and ``meta`` (arch, seeds, method, head, accuracies, timings).
    """
    seeds = _check_inputs(tasks, arch, seeds, method, head)
    config = config or TrainConfig()
    if epochs is not None:
        config = TrainConfig(**{**config.to_dict(), "epochs": int(epochs)})
    if "loss" in fisher_options:
        raise ValueError("distance_matrix: the loss comes from the tasks (TaskData.loss); do not pass loss=")
    fisher_options.setdefault("progress", False)
    # the matrix is parallel over its items: each Fisher pass runs whole on the rank that owns it
    fisher_options.setdefault("distributed", False)
    cache = Cache(cache_dir) if cache_dir is not None else None
    names = [_task_name(t) for t in tasks]
    K = len(tasks)
    classification = tasks[0].loss != "mse"
    widths = [int(t.num_classes) for t in tasks] if classification else [None] * K
    shared_width = max(widths) if classification else None
    columns = list(range(K)) if targets is None else sorted({int(b) for b in targets})
    if not columns or not all(0 <= b < K for b in columns):
        raise ValueError(f"distance_matrix: targets must be a non-empty list of task indices in 0..{K - 1}, "
                         f"got {targets!r}")
    run = _Run(tasks, arch, config, cache, device, head, shared_width, fisher_options, progress)

    from .. import distributed as dist_util  # lazy: torch.distributed is imported only when used
    rank, world = dist_util.world()
    train_items = [_Item("train", s, k) for s in seeds for k in range(K)]
    fisher_items = [_Item("fisher", s, a, b) for s in seeds for b in columns for a in range(K)]
    if world > 1:
        if cache is None:
            raise ValueError("distance_matrix: a distributed run needs cache_dir, a folder every rank can read: "
                             "the ranks meet there")
        # each (task, seed) training, then each (source net, target data) Fisher pass, runs on one rank and
        # lands in the shared cache; after each phase every rank has finished, and all assemble from the cache
        for phase, what in ((train_items, "train"), (fisher_items, "fisher")):
            dist_util.run_items(phase, run.do_item, progress=progress, desc=f"rank {rank} {what}")
    per_seed = np.full((len(seeds), K, K), np.nan)
    with progress_bar(total=len(fisher_items), enabled=progress and rank == 0, desc=f"distance {arch}",
                      unit="pair") as bar:
        for i, s in enumerate(seeds):
            for b in columns:
                F_bb = run.fisher(s, b, b)
                for a in range(K):
                    F_ab = F_bb if a == b else run.fisher(s, a, b)
                    if head == "legacy":
                        F_ab, F_bb_a = pad_to_common(F_ab, F_bb)
                    else:
                        F_bb_a = F_bb
                    per_seed[i, a, b] = _measure(method, F_ab, F_bb_a)
                    bar.update(1)
    meta = {"arch": arch, "method": method, "head": head, "seeds": seeds, "loss": tasks[0].loss,
            "num_outputs": shared_width if head == "shared" else widths, "config": config.to_dict(),
            "fisher_options": {k: str(v) for k, v in fisher_options.items() if k not in ("progress", "distributed")},
            "fingerprints": [t.fingerprint() for t in tasks], "world_size": world, "targets": columns,
            "test_accuracy": run.accuracies(seeds), "seconds": dict(run.seconds)}
    return DistanceMatrix.from_per_seed(names, per_seed, meta)


def _measure(method: str, F_ab, F_bb) -> float:
    if method == "fisher":
        return fisher_task_distance(F_ab, F_bb)
    if method == "cosine":
        return cosine_distance(F_ab, F_bb)
    return legacy_distance(F_ab, F_bb)


class _Run:
    """The networks and Fisher diagonals of one matrix: computed once, cached in memory and on disk."""

    def __init__(self, tasks, arch, config, cache, device, head, shared_width, fisher_options, progress):
        self.tasks, self.arch, self.config, self.cache = tasks, arch, config, cache
        self.device, self.head, self.shared_width = device, head, shared_width
        self.fisher_options, self.progress = fisher_options, progress
        self.nets: Dict[Tuple[int, int], Tuple[nn.Module, object]] = {}
        self.fishers: Dict[Tuple[int, int, int], Dict[str, torch.Tensor]] = {}
        self.seconds = {"train": 0.0, "fisher": 0.0}

    # ---------------------------------------------------------------- items
    def do_item(self, it: _Item) -> None:
        if it.kind == "train":
            self.net(it.seed, it.task)
        else:
            self.fisher(it.seed, it.task, it.target)

    def net(self, seed: int, k: int):
        if (seed, k) not in self.nets:
            t0 = time.perf_counter()
            width = self.shared_width if self.head == "shared" else None
            self.nets[(seed, k)] = get_trained(self.cache, self.tasks[k], self.arch, seed, self.config,
                                               num_outputs=width, device=self.device, progress=False)
            self.seconds["train"] += time.perf_counter() - t0
        return self.nets[(seed, k)][0]

    def fisher(self, seed: int, a: int, b: int) -> Dict[str, torch.Tensor]:
        """F_ab for seed: network N_a^seed on task b's test data, as {name: tensor} (CPU)."""
        if (seed, a, b) in self.fishers:
            return self.fishers[(seed, a, b)]
        key = None
        if self.cache is not None:
            key = self.cache.key(item="fisher", arch=self.arch, seed=seed, head=self.head,
                                 source=self.tasks[a].fingerprint(), target=self.tasks[b].fingerprint(),
                                 config=self.config.to_dict(), width=self.shared_width,
                                 options={k: str(self.fisher_options[k]) for k in _FISHER_KEY_OPTIONS
                                          if k in self.fisher_options})
            found = self.cache.load("fisher", key)
            if found is not None:
                self.fishers[(seed, a, b)] = found
                return found
        net = self.net(seed, a)
        t0 = time.perf_counter()
        target = self.tasks[b]
        model = net
        if self.head == "legacy" and target.loss != "mse":
            model = PaddedLogits(net, max(int(target.num_classes), _out_width(net)))
        result = fisher_diagonal(model, (target.x_test, target.y_test), loss=target.loss,
                                 device=self.device, **self.fisher_options)
        prefix = "net." if model is not net else ""
        found = {k[len(prefix):]: v.detach().cpu() for k, v in result.items()}
        self.seconds["fisher"] += time.perf_counter() - t0
        if self.cache is not None:
            self.cache.save("fisher", key, found, meta={"seed": seed, "source": a, "target": b,
                                                        "num_samples": result.num_samples})
        self.fishers[(seed, a, b)] = found
        return found

    def accuracies(self, seeds) -> Dict[str, List[Optional[float]]]:
        out = {}
        for k, t in enumerate(self.tasks):
            accs = []
            for s in seeds:
                res = self.nets.get((s, k), (None, None))[1]
                acc = getattr(res, "test_accuracy", None)
                accs.append(None if acc is None or (isinstance(acc, float) and math.isnan(acc)) else float(acc))
            out[_task_name(t)] = accs
        return out


def _out_width(net: nn.Module) -> int:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 0
