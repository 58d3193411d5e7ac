"""Searches inside one space at a given budget: repeated FUSE (:func:`fuse_search`) and random search
(:func:`random_search`), with the :class:`Budget` they share and the :class:`SearchOutcome` they return.

A *space* is a :class:`~ftdfast.nas.space.SearchSpace` (the paper's DARTS-style cells) or a
:class:`~ftdfast.nas.nasbench201.NB201Space`; both offer ``sample_many``, ``size`` and
``network(genotype, channels=, layers=, num_classes=, in_channels=)``.

Seeds: every stream of a search (the train/validation split, each iteration's candidate pool, each
candidate's initial weights, each FUSE run's batch order) is ``derive_seed(seed, <its label>)``
(:mod:`ftdfast.nas.seeds`), so searches with different seeds draw independent pools.

Validation data for FUSE's alpha (and random search's choice) is carved from the task's TRAINING data
(:func:`~ftdfast.nas.fuse.split_train_val`), never from its test set.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..progress import progress_bar
from ..train import TrainConfig, _batches, train_model
from .fuse import WEIGHT_LOSSES, FuseConfig, FuseResult, check_choice, check_int, fuse, split_train_val
from .seeds import derive_seed

INCUMBENT_POLICIES = ("reinit", "keep", "head")
#: How a :func:`fuse_search` spends its budget (:attr:`Budget.schedule`); see :meth:`Budget.plan`.
SCHEDULES = ("halving", "paper", "threshold")
#: Chosen on the project's own cell table (``benchmarks/evidence/celltable.py search``, docs/nas/README.md, 2026-12-08), the
#: ground truth matched to this budget: the best mean pick, above its pool's mean and not below random search
#: (both targets of issue 24); its lead over "paper" is not significant, and on NAS-Bench-201, whose table comes
#: from a longer training, no schedule (nor random search) selected at all.
DEFAULT_SCHEDULE = "halving"


def split_evenly(total: int, parts: int) -> Tuple[int, ...]:
    """``total`` as ``parts`` ints that differ by at most one, the larger first: ``split_evenly(7, 3) == (3, 2, 2)``."""
    q, r = divmod(total, parts)
    return tuple(q + 1 if i < r else q for i in range(parts))


@dataclass(frozen=True)
class SearchPlan:
    """How one search spends its weight steps: FUSE runs of ``run_sizes[i]`` candidates each under ``configs[i]``
    (from the second run on, one of them is the incumbent), ``incumbent`` the policy for it (``None``: one run,
    no incumbent). ``target_steps``: random search's total at the same budget, which the plan does not exceed."""
    run_sizes: Tuple[int, ...]
    configs: Tuple[FuseConfig, ...]
    incumbent: Optional[str]
    target_steps: int

    @property
    def weight_steps(self) -> int:
        """The plan's candidate-steps if every run goes its full length (a threshold stop makes them fewer)."""
        return sum(c.weight_steps(k) for k, c in zip(self.run_sizes, self.configs))


_PRESETS = {
    # a CPU smoke run (does it run end to end?): a pool of 8 cells of 16 steps, narrow and shallow
    "cpu-smoke": dict(iterations=2, candidates=4, rounds=2, w_steps=8, batch_size=32, channels=8, layers=1),
    # a GPU-sized search: a pool of 64 cells, each worth 1,000 steps of random search (about 26 epochs of 2,500
    # images at batch 64), the NAS-Bench-201 skeleton (C = 16, 5 cells per stage)
    "gpu": dict(iterations=8, candidates=8, rounds=10, w_steps=100, batch_size=64, channels=16, layers=5),
}
#: The names :meth:`Budget.preset` accepts.
BUDGET_PRESETS = tuple(_PRESETS)


@dataclass(frozen=True)
class Budget:
    """The search effort of one :func:`fuse_search` (or :func:`random_search`) call; every field is checked here.

    iterations, candidates: the pool: random search trains ``iterations * candidates`` cells alone, each for
    about ``rounds * w_steps`` steps (:attr:`weight_steps`, rounded to whole epochs: :func:`random_search_steps`).
    That total of candidate-steps (one weight step of one candidate) is what every FUSE schedule spends at most
    (:meth:`plan`). batch_size, channels, layers: training batch and the skeleton of every candidate network;
    seconds: an optional wall-time cap checked between FUSE runs.

    schedule (:data:`SCHEDULES`): ``"halving"`` (successive halving, the default: :data:`DEFAULT_SCHEDULE` says
    on what evidence), ``"paper"`` (the authors') or ``"threshold"`` (ftdfast's earlier
    converge-then-threshold runs); :meth:`plan` says what each spends. alpha_steps: the most full-batch alpha
    steps per FUSE round (``"halving"``, ``"threshold"``). weight_loss: ``"threshold"`` only (the others fix
    theirs). incumbent
    (:data:`INCUMBENT_POLICIES`): how last run's winner enters the next run, ``None`` = the schedule's own
    (``"paper"``: ``"head"``, ``"threshold"``: ``"reinit"``; ``"halving"`` has no incumbent): ``"reinit"`` its
    genotype with fresh weights; ``"keep"`` its trained weights (a head start: on digits it won 6 of 6 runs that
    way, issue 14); ``"head"`` fresh weights but its trained classifier (the authors' code).

    Presets: :meth:`preset` (``"cpu-smoke"``, ``"gpu"``). ``Budget()`` is a toy (a pool of 8 cells of 60 steps).
    """
    iterations: int = 2
    candidates: int = 4
    rounds: int = 3
    w_steps: int = 20
    alpha_steps: int = 200
    batch_size: int = 64
    channels: int = 8
    layers: int = 3
    seconds: Optional[float] = None
    incumbent: Optional[str] = None
    weight_loss: str = "mixture"
    schedule: str = DEFAULT_SCHEDULE

    def __post_init__(self):
        for name in ("iterations", "candidates", "rounds", "w_steps", "alpha_steps", "batch_size", "channels",
                     "layers"):
            check_int("Budget", name, getattr(self, name), 1)
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"Budget.seconds must be positive or None, got {self.seconds!r}")
        check_choice("Budget", "schedule", self.schedule, SCHEDULES)
        check_choice("Budget", "incumbent", self.incumbent, INCUMBENT_POLICIES + (None,))
        check_choice("Budget", "weight_loss", self.weight_loss, WEIGHT_LOSSES)
        if self.schedule == "halving" and self.incumbent is not None:
            raise ValueError("Budget.incumbent: the 'halving' schedule is one FUSE run with no incumbent; "
                             "leave incumbent=None")
        if self.schedule != "threshold" and self.weight_loss != "mixture":
            raise ValueError(f"Budget.weight_loss applies to the 'threshold' schedule only ('{self.schedule}' fixes "
                             "its own); leave it at 'mixture'")

    @classmethod
    def preset(cls, name: str, **overrides) -> "Budget":
        """A named budget: ``"cpu-smoke"`` (a pool of 8 cells of 16 steps, 8 channels, 1 cell per stage: a smoke
        run) or ``"gpu"`` (a pool of 64 cells of 1,000 steps, 16 channels, 5 cells per stage); ``overrides``
        replace fields."""
        if name not in _PRESETS:
            raise ValueError(f"unknown Budget preset {name!r}; presets are: {', '.join(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Budget":
        """The inverse of :meth:`to_dict`. A dict without ``schedule`` was written before schedules existed, when
        every search ran what is now ``"threshold"``: it reads as that schedule."""
        return cls(**{"schedule": "threshold", **d})

    @property
    def weight_steps(self) -> int:
        """The steps asked for each cell of random search (``rounds * w_steps``; it trains whole epochs)."""
        return self.rounds * self.w_steps

    @property
    def pool(self) -> int:
        """Cells random search weighs (and ``"halving"``'s pool): ``iterations * candidates``."""
        return self.iterations * self.candidates

    def plan(self, pool: int, n_train: int, n_val: int) -> SearchPlan:
        """How a FUSE search of ``pool`` cells (``self.pool``, or fewer in a small space) on ``n_train`` training
        and ``n_val`` validation images spends random search's total ``T = pool * random_search_steps(self,
        n_train)`` candidate-steps.

        * ``"halving"``: one run of the ``pool`` cells, ``weight_loss="own"``, ``R = max(1, ceil(log2 pool))``
          rounds (rungs); after each but the last the lower half by alpha leaves (``pool, ceil(pool/2), ...``,
          2 in the last rung); every rung gets ``T / R`` candidate-steps, i.e. rung ``r`` of ``n_r`` cells
          ``floor(T / (R n_r))`` steps each, the last rung what is left (``floor(left / n_last)``), so the total is
          ``T`` less fewer than ``n_last`` steps. The pick: argmax alpha in the last rung. No stopping rule.
        * ``"paper"`` (the authors' schedule, scaled): runs of 3 cells (3 new, then the incumbent and 2 new),
          ``max(1, (pool - 1) // 2)`` runs (at most ``pool`` distinct cells), each 10 rounds ("stages") whose
          steps add up to ``floor(T / (3 runs))`` per cell; weight_loss ``"mixture"``; alpha near-frozen: Adam at
          lr 1e-3, ``10 * ceil(n_val / batch_size)`` steps per round (the authors' 10 epochs of mini-batches),
          no early end; no stopping rule; the incumbent ``"head"``.
        * ``"threshold"``: ``iterations`` runs of ``candidates`` new cells (plus the incumbent from the second
          run on), ``rounds`` rounds each, ``floor(T / (cells over all runs))`` steps per cell and run; alpha
          fitted to convergence (``alpha_steps`` at lr 0.1); with ``weight_loss="mixture"`` it stops once a weight
          reaches 0.9 or alpha stops moving (tol 1e-3), so it spends fewer steps than ``T``.
        """
        check_int("plan", "pool", pool, 1)
        target = pool * random_search_steps(self, n_train)
        if self.schedule == "halving":
            rungs = max(1, math.ceil(math.log2(pool)))
            probe = FuseConfig(rounds=rungs, halving=True, weight_loss="own")
            counts = probe.active_counts(pool)
            steps = [target // (rungs * n) for n in counts[:-1]]
            steps.append((target - sum(n * s for n, s in zip(counts, steps))) // counts[-1])
            config = FuseConfig(rounds=rungs, w_steps=tuple(steps), halving=True, weight_loss="own",
                                alpha_steps=self.alpha_steps, batch_size=self.batch_size)
            return SearchPlan((pool,), (config,), None, target)
        if self.schedule == "paper":
            runs = max(1, (pool - 1) // 2)
            sizes = tuple(min(3, pool) for _ in range(runs))
            per_cell = target // sum(sizes)
            config = FuseConfig(rounds=10, w_steps=split_evenly(per_cell, 10), weight_loss="mixture",
                                alpha_lr=1e-3, alpha_steps=10 * -(-n_val // self.batch_size), alpha_tol=0.0,
                                batch_size=self.batch_size)
            return SearchPlan(sizes, (config,) * runs, self.incumbent or "head", target)
        sizes = tuple(self.candidates + (i > 0) for i in range(self.iterations))
        per_cell = target // sum(sizes)
        stops = dict(threshold=0.9, tol=1e-3) if self.weight_loss == "mixture" else {}
        config = FuseConfig(rounds=self.rounds, w_steps=split_evenly(per_cell, self.rounds),
                            weight_loss=self.weight_loss, alpha_steps=self.alpha_steps, batch_size=self.batch_size,
                            **stops)
        return SearchPlan(sizes, (config,) * self.iterations, self.incumbent or "reinit", target)


def random_search_steps(budget: Budget, n_train: int) -> int:
    """The weight steps :func:`random_search` gives each cell: ``epochs_for_steps(budget.weight_steps, ...)``
    whole epochs of ``ceil(n_train / batch_size)`` batches (a last batch of one sample joins the one before)."""
    return epochs_for_steps(budget.weight_steps, budget.batch_size, n_train) * len(_batches(n_train,
                                                                                           budget.batch_size))


@dataclass
class SearchOutcome:
    """What one search found: the genotype, its trained network, and the record of the runs.

    ``weight_steps``: the candidate-steps the search spent (one weight step of one candidate).
    ``history``: per FUSE iteration, the genotypes, the winner and the run's :meth:`FuseResult.to_dict`
    (alpha's history, every candidate's validation loss and accuracy per round); per candidate for
    random search. ``seconds``: the whole call; ``distance_seconds``: the task-distance part of it (TA-NAS).
    """
    genotype: Any
    module: torch.nn.Module = field(repr=False)
    history: List[Dict[str, Any]]
    seconds: float
    space: Any
    seed: int = 0
    distances: Optional[Dict[str, float]] = None
    distance_std: Optional[Dict[str, float]] = None
    closest: Optional[str] = None
    distance_seconds: Optional[float] = None
    weight_steps: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"genotype": _gdict(self.genotype), "seconds": self.seconds, "space": self.space.to_dict(),
                "seed": self.seed, "history": self.history, "distances": self.distances,
                "distance_std": self.distance_std, "closest": self.closest,
                "distance_seconds": self.distance_seconds, "weight_steps": self.weight_steps}


def _gdict(g: Any) -> Any:
    return g.to_dict() if hasattr(g, "to_dict") else str(g)


def _check_classification(task_data, who: str) -> None:
    if getattr(task_data, "loss", None) != "cross_entropy":
        raise ValueError(f"{who} needs a classification TaskData (loss 'cross_entropy'); got loss "
                         f"{getattr(task_data, 'loss', None)!r}")


def _train_val(task_data, val_fraction: float, seed: int):
    return split_train_val(task_data.x_train, task_data.y_train, val_fraction, derive_seed(seed, "split"))


def _network(space, g, budget: Budget, task_data, seed: int) -> torch.nn.Module:
    """``space``'s network for ``g``, its initial weights drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return space.network(g, channels=budget.channels, layers=budget.layers,
                             num_classes=int(task_data.num_classes), in_channels=int(task_data.x_train.shape[1]))


def _enter(incumbent: torch.nn.Module, policy: str, space, g, budget: Budget, task_data,
           seed: int) -> torch.nn.Module:
    """Last run's winner as it enters the next run, by ``policy`` (see :class:`Budget`)."""
    if policy == "keep":
        return incumbent
    net = _network(space, g, budget, task_data, seed)
    if policy == "head":
        head = getattr(incumbent, "classifier", None)
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(f"incumbent policy 'head' needs networks with a Linear 'classifier'; "
                            f"{type(incumbent).__name__} has none: use incumbent='reinit'")
        net.classifier.load_state_dict(head.state_dict())
    return net


def fuse_search(space, task_data, budget: Budget, *, seed: int = 0, val_fraction: float = 0.2, device=None,
                progress: bool = True, checkpoint_dir: Optional[str] = None) -> SearchOutcome:
    """FUSE inside ``space`` on ``task_data`` (a classification ``TaskData``), by ``budget.schedule``.

    :meth:`Budget.plan` gives the runs: each samples its new genotypes from ``space`` (a fresh pool per run),
    adds the incumbent from the second run on (``plan.incumbent``), runs :func:`~ftdfast.nas.fuse.fuse` and
    keeps argmax alpha as the incumbent. Stops after the plan's runs or ``budget.seconds``. With
    ``checkpoint_dir``, every FUSE run checkpoints there (resumable). ``outcome.weight_steps``: the
    candidate-steps spent.
    """
    _check_classification(task_data, "fuse_search")
    train, val = _train_val(task_data, val_fraction, seed)
    pool = min(budget.pool, space.size())     # a restricted space can hold fewer genotypes than the budget asks for
    plan = budget.plan(pool, len(train[1]), len(val[1]))
    t0 = time.perf_counter()
    incumbent: Optional[torch.nn.Module] = None
    incumbent_g = None
    history: List[Dict[str, Any]] = []
    spent = 0
    with progress_bar(total=len(plan.run_sizes), enabled=progress, desc="search", unit="fuse") as bar:
        for it, (size, config) in enumerate(zip(plan.run_sizes, plan.configs)):
            if budget.seconds is not None and it > 0 and time.perf_counter() - t0 > budget.seconds:
                break
            new = size - (incumbent_g is not None)
            fresh = space.sample_many(min(new + 1, space.size()), seed=derive_seed(seed, "pool", it))
            fresh = [g for g in fresh if g != incumbent_g][:new]
            genotypes = ([incumbent_g] if incumbent_g is not None else []) + fresh
            cands = [_enter(incumbent, plan.incumbent, space, g, budget, task_data, derive_seed(seed, "init", it, k))
                     if (k == 0 and incumbent is not None)
                     else _network(space, g, budget, task_data, derive_seed(seed, "init", it, k))
                     for k, g in enumerate(genotypes)]
            ckpt = os.path.join(checkpoint_dir, f"fuse{it}.pt") if checkpoint_dir else None
            res: FuseResult = fuse(cands, train, val, config, num_classes=task_data.num_classes,
                                   seed=derive_seed(seed, "fuse", it), device=device, progress=False,
                                   checkpoint=ckpt)
            spent += sum(len(a) * config.steps(r) for r, a in enumerate(res.active_history))
            best = res.best_index
            incumbent, incumbent_g = res.best_module, genotypes[best]
            record = res.to_dict()
            record.update(iteration=it, genotypes=[_gdict(g) for g in genotypes], best=best,
                          weights=res.weights, incumbent=plan.incumbent if it > 0 else None)
            history.append(record)
            bar.update(1)
    return SearchOutcome(incumbent_g, incumbent, history, time.perf_counter() - t0, space, seed=seed,
                         weight_steps=spent)


@dataclass
class SplitData:
    """A duck-typed TaskData (what train_model, fuse_search and random_search read) from tensors: ``x_train
    (n, c, h, w)``, ``y_train (n,)``, ``x_test``, ``y_test``, ``num_classes``, ``name``."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str
    loss: str = "cross_entropy"

    @property
    def task(self):
        return self


def epochs_for_steps(steps: int, batch_size: int, n_train: int) -> int:
    """Whole epochs closest to ``steps`` batches of ``batch_size`` over ``n_train`` samples (at least one)."""
    return max(1, int(round(steps * batch_size / n_train)))


def random_search(space, task_data, budget: Budget, *, seed: int = 0, val_fraction: float = 0.2,
                  device=None, progress: bool = True) -> SearchOutcome:
    """The random-search baseline: ``budget.pool`` genotypes sampled from ``space``, each trained alone
    (:func:`ftdfast.train.train_model`) for :func:`random_search_steps` steps (``rounds * w_steps`` rounded to
    whole epochs); the best on the validation split wins. Paired with FUSE: at the same ``seed`` the pool, the
    train/validation split and each cell's initial weights are those of :func:`fuse_search`'s first run (the
    ``"halving"`` schedule weighs exactly this pool)."""
    _check_classification(task_data, "random_search")
    train, val = _train_val(task_data, val_fraction, seed)
    split = SplitData(*train, *val, int(task_data.num_classes), f"{getattr(task_data.task, 'name', 'task')}/random")
    config = TrainConfig(epochs=epochs_for_steps(budget.weight_steps, budget.batch_size, len(train[1])),
                         batch_size=budget.batch_size)
    t0 = time.perf_counter()
    cands = space.sample_many(min(budget.pool, space.size()), seed=derive_seed(seed, "pool", 0))
    best, best_acc, best_module, history = None, -math.inf, None, []
    with progress_bar(total=len(cands), enabled=progress, desc="random", unit="cand") as bar:
        for k, g in enumerate(cands):
            net = _network(space, g, budget, task_data, derive_seed(seed, "init", 0, k))
            result = train_model(net, split, config, seed=derive_seed(seed, "batches", k), device=device,
                                 progress=False)
            acc = result.test_accuracy          # on the validation split
            history.append({"genotype": _gdict(g), "val_accuracy": acc, "epochs": config.epochs})
            if acc > best_acc:
                best, best_acc, best_module = g, acc, net
            bar.update(1)
    return SearchOutcome(best, best_module, history, time.perf_counter() - t0, space, seed=seed,
                         weight_steps=len(cands) * random_search_steps(budget, len(train[1])))
