"""Task-aware NAS (the paper's Algorithm 2): a dictionary of baseline tasks with searched cells, and
a search for a new target task inside the space of its closest baseline.

- :class:`Budget`: how much searching one call may do (iterations of FUSE, candidates per
  iteration, FUSE rounds and steps, optional wall-time cap).
- :func:`fuse_search`: repeated FUSE in a space: sample candidates, FUSE them together with the
  incumbent (which keeps its trained weights), keep the winner.
- :class:`TaskDictionary` (JSON): per baseline task, the task definition, its data fingerprint,
  the searched genotype and its space, and where its epsilon-networks are cached (for the Fisher).
- :func:`build_dictionary`: FUSE search in the general space for every baseline.
- :class:`TaskAwareNAS`: ``search(target)`` computes the Fisher task distance from every baseline to
  the target (``distance_matrix(..., targets=[target])``, same caches), restricts the space to the
  closest baseline's cell topology and operations, and runs :func:`fuse_search` there.

Validation data for FUSE's alpha is carved from each task's TRAINING data (``split_train_val``),
never from its test set.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..atomic import atomic_write_text
from ..progress import progress_bar
from ..train import TrainConfig, evaluate
from .fuse import FuseResult, fuse, split_train_val
from .genotype import Genotype
from .space import SearchSpace

FORMAT = "ftdfast.TaskDictionary"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Budget:
    """The search effort of one :func:`fuse_search` call.

    iterations: FUSE runs; candidates: newly sampled genotypes per run (the incumbent joins from the
    second run on); rounds/w_steps/alpha_steps: each FUSE run's schedule; seconds: optional wall-time
    cap checked between runs; channels/layers: the skeleton of every candidate network.
    """
    iterations: int = 2
    candidates: int = 4
    rounds: int = 3
    w_steps: int = 20
    alpha_steps: int = 5
    batch_size: int = 64
    channels: int = 8
    layers: int = 3
    seconds: Optional[float] = None

    def __post_init__(self):
        for name in ("iterations", "candidates", "rounds", "w_steps", "alpha_steps", "batch_size", "channels",
                     "layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Budget.{name} must be an int >= 1, got {v!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"Budget.seconds must be positive or None, got {self.seconds!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def weight_steps(self) -> int:
        """Weight-training steps of one whole search (what random search gets per candidate set)."""
        return self.iterations * self.rounds * self.w_steps


@dataclass
class SearchOutcome:
    """What one search found: the genotype, its trained network, and the record of the runs."""
    genotype: Genotype
    module: torch.nn.Module = field(repr=False)
    history: List[Dict[str, Any]]
    seconds: float
    space: SearchSpace
    distances: Optional[Dict[str, float]] = None
    distance_std: Optional[Dict[str, float]] = None
    closest: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "seconds": self.seconds, "space": self.space.to_dict(),
                "history": self.history, "distances": self.distances, "distance_std": self.distance_std,
                "closest": self.closest}


def _train_val(task_data, val_fraction: float, seed: int):
    return split_train_val(task_data.x_train, task_data.y_train, val_fraction, seed)


def fuse_search(space: SearchSpace, task_data, budget: Budget, *, seed: int = 0, val_fraction: float = 0.2,
                device=None, progress: bool = True, checkpoint_dir: Optional[str] = None) -> SearchOutcome:
    """FUSE repeatedly inside ``space`` on ``task_data`` (a classification ``TaskData``).

    Each iteration samples ``budget.candidates`` new genotypes from ``space`` (seeded by ``seed``
    and the iteration), adds the incumbent network (trained weights kept), runs :func:`fuse`, and
    keeps argmax alpha as the incumbent. Stops after ``budget.iterations`` or ``budget.seconds``.
    With ``checkpoint_dir``, every FUSE run checkpoints there (resumable).
    """
    if getattr(task_data, "loss", None) != "cross_entropy":
        raise ValueError("fuse_search needs a classification TaskData (loss 'cross_entropy'); got loss "
                         f"{getattr(task_data, 'loss', None)!r}")
    train, val = _train_val(task_data, val_fraction, seed)
    t0 = time.perf_counter()
    incumbent: Optional[torch.nn.Module] = None
    incumbent_g: Optional[Genotype] = None
    history: List[Dict[str, Any]] = []
    with progress_bar(total=budget.iterations, enabled=progress, desc="search", unit="fuse") as bar:
        for it in range(budget.iterations):
            if budget.seconds is not None and it > 0 and time.perf_counter() - t0 > budget.seconds:
                break
            # a restricted space can hold fewer genotypes than the budget asks for
            fresh = space.sample_many(min(budget.candidates, space.size()), seed=seed * 1000003 + it)
            fresh = [g for g in fresh if g != incumbent_g]
            cands: List[Any] = ([incumbent] if incumbent is not None else []) + fresh
            ckpt = os.path.join(checkpoint_dir, f"fuse{it}.pt") if checkpoint_dir else None
            res: FuseResult = fuse(cands, train, val, channels=budget.channels, layers=budget.layers,
                                   num_classes=task_data.num_classes, in_channels=task_data.x_train.shape[1],
                                   rounds=budget.rounds, w_steps=budget.w_steps, alpha_steps=budget.alpha_steps,
                                   batch_size=budget.batch_size, seed=seed * 1000003 + it, device=device,
                                   progress=False, checkpoint=ckpt)
            genotypes = ([incumbent_g] if incumbent is not None else []) + fresh
            best = res.best_index
            incumbent, incumbent_g = res.best_module, genotypes[best]
            history.append({"iteration": it, "genotypes": [g.to_dict() for g in genotypes], "best": best,
                            "weights": res.weights, "stop_reason": res.stop_reason, "seconds": res.seconds,
                            "val_accuracy": res.val_accuracy_history[-1] if res.val_accuracy_history else None})
            bar.update(1)
    return SearchOutcome(incumbent_g, incumbent, history, time.perf_counter() - t0, space)


# ------------------------------------------------------------------------------------------- dictionary
@dataclass
class BaselineEntry:
    """One baseline task of a :class:`TaskDictionary`."""
    name: str
    task: Dict[str, Any]          # Task.to_dict()
    fingerprint: str              # TaskData.fingerprint() of the task's data
    num_classes: int
    genotype: Genotype
    space: SearchSpace            # where its genotype was searched
    search_seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "task": self.task, "fingerprint": self.fingerprint,
                "num_classes": self.num_classes, "genotype": self.genotype.to_dict(),
                "space": self.space.to_dict(), "search_seconds": self.search_seconds}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BaselineEntry":
        return cls(str(d["name"]), dict(d["task"]), str(d["fingerprint"]), int(d["num_classes"]),
                   Genotype.from_dict(d["genotype"]), SearchSpace.from_dict(d["space"]),
                   float(d.get("search_seconds", 0.0)))


@dataclass
class TaskDictionary:
    """Baseline tasks with their searched cells, and where their epsilon-networks live.

    ``distance``: the settings of the Fisher task distance (arch, seeds, train config, cache dir),
    so that a target's distances reuse the baselines' cached networks and Fisher diagonals.
    """
    entries: List[BaselineEntry]
    input_shape: tuple
    general_space: SearchSpace
    distance: Dict[str, Any]
    meta: Dict[str, Any] = field(default_factory=dict)

    def names(self) -> List[str]:
        return [e.name for e in self.entries]

    def __getitem__(self, name: str) -> BaselineEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no baseline task {name!r} in the dictionary; it has {self.names()}")

    def to_dict(self) -> Dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "input_shape": list(self.input_shape),
                "general_space": self.general_space.to_dict(), "distance": self.distance,
                "entries": [e.to_dict() for e in self.entries], "meta": self.meta}

    def save(self, path: str) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str) -> "TaskDictionary":
        if not os.path.exists(path):
            raise FileNotFoundError(f"task dictionary {path}: no such file (build one with `ftdfast dictionary "
                                    "build` or ftdfast.nas.build_dictionary)")
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"task dictionary {path} is not valid JSON ({e}); rebuild it") from None
        return cls.from_dict(d, source=path)

    @classmethod
    def from_dict(cls, d: Any, source: str = "payload") -> "TaskDictionary":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{source} is not a task dictionary written by ftdfast (format {FORMAT!r} missing)")
        if d.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{source} has version {d['version']}; this ftdfast reads up to {FORMAT_VERSION}")
        try:
            entries = [BaselineEntry.from_dict(e) for e in d["entries"]]
            out = cls(entries, tuple(int(v) for v in d["input_shape"]), SearchSpace.from_dict(d["general_space"]),
                      dict(d["distance"]), dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{source} is a malformed task dictionary: {type(e).__name__}: {e}") from None
        if not entries:
            raise ValueError(f"{source} is a malformed task dictionary: it has no baseline task")
        return out


def _distance_settings(arch: str, seeds, config: TrainConfig, cache_dir: Optional[str],
                       fisher_options: Dict[str, Any]) -> Dict[str, Any]:
    return {"arch": arch, "seeds": list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds],
            "config": config.to_dict(), "cache_dir": cache_dir,
            "fisher_options": {k: v for k, v in fisher_options.items() if isinstance(v, (int, float, str, bool))}}


def build_dictionary(baselines: Sequence, general_space: Optional[SearchSpace] = None,
                     budget: Optional[Budget] = None, *, arch: str = "small_cnn", seeds=1,
                     config: Optional[TrainConfig] = None, cache_dir: Optional[str] = None, seed: int = 0,
                     device=None, path: Optional[str] = None, progress: bool = True,
                     **fisher_options) -> TaskDictionary:
    """Search a cell for every baseline task (``TaskData``) in ``general_space`` with FUSE.

    With ``path``, the dictionary is saved after every baseline, and a rerun resumes: baselines
    already in the file (same task and data fingerprint) are kept, not searched again. Under a
    ``torch.distributed`` job the baselines' searches are spread over the ranks (``path``'s folder,
    shared by every rank, is where they meet) and rank 0 writes the file.
    """
    if not baselines:
        raise ValueError("build_dictionary needs at least one baseline TaskData")
    general_space = general_space or SearchSpace()
    budget = budget or Budget()
    config = config or TrainConfig()
    shapes = {tuple(t.x_train.shape[1:]) for t in baselines}
    if len(shapes) != 1:
        raise ValueError(f"baseline tasks must share one input shape, got {sorted(shapes)}")
    done: Dict[str, BaselineEntry] = {}
    if path and os.path.exists(path):
        old = TaskDictionary.load(path)
        done = {e.fingerprint: e for e in old.entries}
    d = TaskDictionary([], shapes.pop(), general_space, _distance_settings(arch, seeds, config, cache_dir,
                                                                             fisher_options),
                       {"budget": budget.to_dict(), "seed": seed})
    from .. import distributed as dist_util
    rank, world = dist_util.world()
    folder = os.path.dirname(os.path.abspath(path)) if path else None

    def search(k: int, td) -> BaselineEntry:
        fp = td.fingerprint()
        ckpt = os.path.join(folder, "fuse", fp[:16]) if folder else None
        out = fuse_search(general_space, td, budget, seed=seed + k, device=device, progress=progress,
                          checkpoint_dir=ckpt)
        return BaselineEntry(td.task.name, td.task.to_dict(), fp, int(td.num_classes), out.genotype,
                             general_space, out.seconds)

    if world > 1:
        # one baseline search per item, spread over the ranks; each lands in the shared folder as it finishes
        if not path:
            raise ValueError("build_dictionary: a distributed run needs path=, in a folder every rank can read")
        entry_file = lambda td: os.path.join(folder, "entries", td.fingerprint()[:32] + ".json")  # noqa: E731

        def run(k: int) -> None:
            entry = search(k, baselines[k])
            atomic_write_text(entry_file(baselines[k]), json.dumps(entry.to_dict()))

        todo = [k for k, td in enumerate(baselines) if td.fingerprint() not in done]
        dist_util.run_items(todo, run, done=lambda k: os.path.exists(entry_file(baselines[k])))
        for td in baselines:
            if td.fingerprint() not in done:
                with open(entry_file(td)) as f:
                    done[td.fingerprint()] = BaselineEntry.from_dict(json.load(f))
    for k, td in enumerate(baselines):
        fp = td.fingerprint()
        if fp not in done:
            done[fp] = search(k, td)
            d.entries.append(done[fp])
            if path:
                d.save(path)  # resumable baseline by baseline
        else:
            d.entries.append(done[fp])
    if path and rank == 0:
        d.save(path)
    return d


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
        """Distances, closest baseline, restricted space, FUSE search; returns the outcome (with the
        distances, the closest baseline and the search time, distances included)."""
        budget = budget or Budget()
        t0 = time.perf_counter()
        mean, std = self.distances(target, device=device, progress=progress)
        closest = min(mean, key=lambda n: (mean[n], n))
        space = self.dictionary.general_space.restrict_to(self.dictionary[closest].genotype)
        out = fuse_search(space, target, budget, seed=seed, device=device, progress=progress,
                          checkpoint_dir=checkpoint_dir)
        out.distances, out.distance_std, out.closest = mean, std, closest
        out.seconds = time.perf_counter() - t0
        return out


def random_search(space: SearchSpace, task_data, budget: Budget, *, seed: int = 0, val_fraction: float = 0.2,
                  device=None, progress: bool = True) -> SearchOutcome:
    """The random-search baseline at equal budget: ``iterations * candidates`` genotypes sampled from
    ``space``, each trained alone for ``rounds * w_steps`` steps (what FUSE gives each of its
    candidates), the best on the validation split wins."""
    from .network import Network
    train, val = _train_val(task_data, val_fraction, seed)
    t0 = time.perf_counter()
    cands = space.sample_many(min(budget.iterations * budget.candidates, space.size()), seed=seed * 1000003 + 7)
    best, best_acc, best_module, history = None, -1.0, None, []
    with progress_bar(total=len(cands), enabled=progress, desc="random", unit="cand") as bar:
        for k, g in enumerate(cands):
            torch.manual_seed(seed * 1000003 + k)
            net = Network(g, budget.channels, budget.layers, int(task_data.num_classes), train[0].shape[1])
            net = train_steps(net, train, budget.rounds * budget.w_steps, budget.batch_size, seed=seed + k,
                              device=device)
            acc = evaluate(net, *val, loss="cross_entropy")["accuracy"]
            history.append({"genotype": g.to_dict(), "val_accuracy": acc})
            if acc > best_acc:
                best, best_acc, best_module = g, acc, net
            bar.update(1)
    return SearchOutcome(best, best_module, history, time.perf_counter() - t0, space)


def train_steps(net: torch.nn.Module, data, steps: int, batch_size: int, *, lr: float = 1e-3, seed: int = 0,
                device=None) -> torch.nn.Module:
    """``steps`` Adam steps on batches drawn without replacement (reshuffled every pass); eval mode after."""
    x, y = data
    dev = torch.device(device) if device is not None else torch.device("cpu")
    net = net.to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > len(y):
            order, pos = torch.randperm(len(y), generator=g), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x[idx].to(dev)), y[idx].to(dev)).backward()
        opt.step()
    return net.eval()
