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
from typing import Any, Dict, List, Optional

import torch

from ..progress import progress_bar
from ..train import TrainConfig, train_model
from .fuse import WEIGHT_LOSSES, FuseResult, fuse, split_train_val
from .seeds import derive_seed

INCUMBENT_POLICIES = ("reinit", "keep")


@dataclass(frozen=True)
class Budget:
    """The search effort of one :func:`fuse_search` (or :func:`random_search`) call.

    iterations: FUSE runs; candidates: newly sampled genotypes per run (the incumbent joins from the
    second run on); rounds/w_steps/alpha_steps: each FUSE run's schedule (``alpha_steps`` is the most
    full-batch alpha steps per round: alpha stops earlier once it converges); seconds: optional
    wall-time cap checked between runs; channels/layers: the skeleton of every candidate network.

    incumbent: how last run's winner enters the next FUSE. ``"reinit"`` (the default, as the authors'
    code does): as its genotype with fresh weights, on equal terms with the new candidates. ``"keep"``:
    with its trained weights; it then starts ahead of candidates that have had no training, and on digits
    it won 6 of 6 runs that way (3 of 6 re-initialized; issue 14), so "keep" measures the head start, not
    the cell.

    weight_loss: what FUSE's weight phase minimizes, ``"mixture"`` (the default, the paper's) or ``"own"``
    (each candidate its own loss); see :mod:`ftdfast.nas.fuse`. Random search ignores it.
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
    incumbent: str = "reinit"
    weight_loss: str = "mixture"

    def __post_init__(self):
        for name in ("iterations", "candidates", "rounds", "w_steps", "alpha_steps", "batch_size", "channels",
                     "layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Budget.{name} must be an int >= 1, got {v!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"Budget.seconds must be positive or None, got {self.seconds!r}")
        if self.incumbent not in INCUMBENT_POLICIES:
            raise ValueError(f"Budget.incumbent must be one of {INCUMBENT_POLICIES}, got {self.incumbent!r}")
        if self.weight_loss not in WEIGHT_LOSSES:
            raise ValueError(f"Budget.weight_loss must be one of {WEIGHT_LOSSES}, got {self.weight_loss!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Budget":
        return cls(**d)

    @property
    def weight_steps(self) -> int:
        """Weight-training steps each FUSE run gives each of its candidates (what random search gives each)."""
        return self.rounds * self.w_steps


@dataclass
class SearchOutcome:
    """What one search found: the genotype, its trained network, and the record of the runs.

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

    def to_dict(self) -> Dict[str, Any]:
        return {"genotype": _gdict(self.genotype), "seconds": self.seconds, "space": self.space.to_dict(),
                "seed": self.seed, "history": self.history, "distances": self.distances,
                "distance_std": self.distance_std, "closest": self.closest,
                "distance_seconds": self.distance_seconds}


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


def fuse_search(space, task_data, budget: Budget, *, seed: int = 0, val_fraction: float = 0.2, device=None,
                progress: bool = True, checkpoint_dir: Optional[str] = None) -> SearchOutcome:
    """FUSE repeatedly inside ``space`` on ``task_data`` (a classification ``TaskData``).

    Each iteration samples ``budget.candidates`` new genotypes from ``space``, adds the incumbent (see
    ``budget.incumbent``), runs :func:`~ftdfast.nas.fuse.fuse` and keeps argmax alpha as the incumbent.
    Stops after ``budget.iterations`` or ``budget.seconds``. With ``checkpoint_dir``, every FUSE run
    checkpoints there (resumable).
    """
    _check_classification(task_data, "fuse_search")
    train, val = _train_val(task_data, val_fraction, seed)
    t0 = time.perf_counter()
    incumbent: Optional[torch.nn.Module] = None
    incumbent_g = None
    history: List[Dict[str, Any]] = []
    with progress_bar(total=budget.iterations, enabled=progress, desc="search", unit="fuse") as bar:
        for it in range(budget.iterations):
            if budget.seconds is not None and it > 0 and time.perf_counter() - t0 > budget.seconds:
                break
            # a restricted space can hold fewer genotypes than the budget asks for
            fresh = space.sample_many(min(budget.candidates, space.size()), seed=derive_seed(seed, "pool", it))
            fresh = [g for g in fresh if g != incumbent_g]
            genotypes = ([incumbent_g] if incumbent_g is not None else []) + fresh
            cands = [incumbent if (k == 0 and incumbent is not None and budget.incumbent == "keep")
                     else _network(space, g, budget, task_data, derive_seed(seed, "init", it, k))
                     for k, g in enumerate(genotypes)]
            ckpt = os.path.join(checkpoint_dir, f"fuse{it}.pt") if checkpoint_dir else None
            res: FuseResult = fuse(cands, train, val, num_classes=task_data.num_classes,
                                   rounds=budget.rounds, w_steps=budget.w_steps, alpha_steps=budget.alpha_steps,
                                   batch_size=budget.batch_size, seed=derive_seed(seed, "fuse", it), device=device,
                                   progress=False, checkpoint=ckpt, weight_loss=budget.weight_loss)
            best = res.best_index
            incumbent, incumbent_g = res.best_module, genotypes[best]
            record = res.to_dict()
            record.update(iteration=it, genotypes=[_gdict(g) for g in genotypes], best=best,
                          weights=res.weights, incumbent=budget.incumbent if it > 0 else None)
            history.append(record)
            bar.update(1)
    return SearchOutcome(incumbent_g, incumbent, history, time.perf_counter() - t0, space, seed=seed)


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
    """The random-search baseline at equal budget: ``iterations * candidates`` genotypes sampled from
    ``space``, each trained alone (:func:`ftdfast.train.train_model`) for about ``rounds * w_steps`` batches
    (what FUSE gives each of its candidates; rounded to whole epochs, see :func:`epochs_for_steps`); the best
    on the validation split wins."""
    _check_classification(task_data, "random_search")
    train, val = _train_val(task_data, val_fraction, seed)
    split = SplitData(*train, *val, int(task_data.num_classes), f"{getattr(task_data.task, 'name', 'task')}/random")
    config = TrainConfig(epochs=epochs_for_steps(budget.weight_steps, budget.batch_size, len(train[1])),
                         batch_size=budget.batch_size)
    t0 = time.perf_counter()
    cands = space.sample_many(min(budget.iterations * budget.candidates, space.size()),
                              seed=derive_seed(seed, "pool", "random"))
    best, best_acc, best_module, history = None, -math.inf, None, []
    with progress_bar(total=len(cands), enabled=progress, desc="random", unit="cand") as bar:
        for k, g in enumerate(cands):
            net = _network(space, g, budget, task_data, derive_seed(seed, "init", "random", k))
            result = train_model(net, split, config, seed=derive_seed(seed, "batches", k), device=device,
                                 progress=False)
            acc = result.test_accuracy          # on the validation split
            history.append({"genotype": _gdict(g), "val_accuracy": acc, "epochs": config.epochs})
            if acc > best_acc:
                best, best_acc, best_module = g, acc, net
            bar.update(1)
    return SearchOutcome(best, best_module, history, time.perf_counter() - t0, space, seed=seed)
