"""The TA-NAS dictionary: baseline tasks with their searched cells (:class:`TaskDictionary`, JSON), how it is
built (:func:`build_dictionary`) and how good its cells are (:func:`dictionary_report`).

Per baseline task the file holds the task definition, its data fingerprint, the searched genotype, the space
it was searched in, the genotypes FUSE weighed on the way (for the quality report), and, for the whole
dictionary, the settings of the Fisher task distance (architecture, seeds, training config, cache folder), so
that a target's distances reuse the baselines' cached epsilon-networks and Fisher diagonals. The file is
checked against this schema on load: a missing or mistyped field is a ``ValueError`` naming it, not a
``KeyError`` later.

Each baseline's search has its own seed, ``derive_seed(seed, "baseline", fingerprint)``
(:mod:`ftdfast.nas.seeds`): baselines, and the target's searches, never share candidate pools.

A restricted space is only as good as the cell it is restricted to: on the NAS-Bench-201 table, CIFAR-100's
search restricted to the op set of CIFAR-10's truly best cell does better than no restriction, and worse when
restricted to a weakly searched cell's op set (``docs/nas/README.md``). :func:`dictionary_report` trains each
baseline's cell and the candidates of its search standalone and sets them side by side.
"""
from __future__ import annotations

import copy
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..atomic import atomic_write_text
from ..train import TrainConfig, train_model
from .genotype import Genotype
from .search import Budget, _network, fuse_search
from .seeds import derive_seed
from .space import SearchSpace

FORMAT = "ftdfast.TaskDictionary"
FORMAT_VERSION = 1


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
    candidates: List[Genotype] = field(default_factory=list)   # every genotype its search's FUSE runs weighed
    seed: Optional[int] = None    # the search's derived seed

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "task": self.task, "fingerprint": self.fingerprint,
                "num_classes": self.num_classes, "genotype": self.genotype.to_dict(),
                "space": self.space.to_dict(), "search_seconds": self.search_seconds,
                "candidates": [g.to_dict() for g in self.candidates], "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BaselineEntry":
        seed = d.get("seed")
        return cls(str(d["name"]), dict(d["task"]), str(d["fingerprint"]), int(d["num_classes"]),
                   Genotype.from_dict(d["genotype"]), SearchSpace.from_dict(d["space"]),
                   float(d.get("search_seconds", 0.0)), [Genotype.from_dict(g) for g in d.get("candidates", [])],
                   None if seed is None else int(seed))


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
                "general_space": self.general_space.to_dict(), "distance": copy.deepcopy(self.distance),
                "entries": [e.to_dict() for e in self.entries], "meta": copy.deepcopy(self.meta)}

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
                      _check_distance_settings(d["distance"]), dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{source} is a malformed task dictionary: {type(e).__name__}: {e}") from None
        if not entries:
            raise ValueError(f"{source} is a malformed task dictionary: it has no baseline task")
        return out


def _check_distance_settings(s: Any) -> Dict[str, Any]:
    """The ``distance`` block of a dictionary file, checked field by field (ValueError naming the field)."""
    def bad(what: str):
        raise ValueError(f"its distance settings {what} (expected {{'arch': str, 'seeds': [int, ...], "
                         "'config': TrainConfig fields, 'cache_dir': str or null, 'fisher_options': {...}}); "
                         "rebuild it with `ftdfast dictionary build`")
    if not isinstance(s, dict):
        bad(f"are a {type(s).__name__}, not an object")
    missing = [k for k in ("arch", "seeds", "config") if k not in s]
    if missing:
        bad(f"lack {', '.join(repr(k) for k in missing)}")
    if not isinstance(s["arch"], str) or not s["arch"]:
        bad(f"have arch {s['arch']!r}, not an architecture name")
    seeds = s["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in seeds):
        bad(f"have seeds {seeds!r}, not a non-empty list of ints")
    if not isinstance(s["config"], dict):
        bad(f"have config {s['config']!r}, not an object")
    try:
        TrainConfig.from_dict(s["config"])
    except (TypeError, ValueError) as e:
        bad(f"have an invalid config ({e})")
    if s.get("cache_dir") is not None and not isinstance(s["cache_dir"], str):
        bad(f"have cache_dir {s['cache_dir']!r}, not a folder name or null")
    if not isinstance(s.get("fisher_options", {}), dict):
        bad(f"have fisher_options {s['fisher_options']!r}, not an object")
    return dict(s)


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

    Each baseline's search seed is ``derive_seed(seed, "baseline", its data fingerprint)``.

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
        s = derive_seed(seed, "baseline", fp)
        out = fuse_search(general_space, td, budget, seed=s, device=device, progress=progress,
                          checkpoint_dir=ckpt)
        seen: List[Genotype] = []
        for record in out.history:
            seen += [g for g in (Genotype.from_dict(d) for d in record["genotypes"]) if g not in seen]
        return BaselineEntry(td.task.name, td.task.to_dict(), fp, int(td.num_classes), out.genotype,
                             general_space, out.seconds, seen, s)

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


# ------------------------------------------------------------------------------------------- quality report
def _median(v: List[float]) -> float:
    return statistics.median(v) if v else math.nan


def dictionary_report(dictionary: TaskDictionary, baselines: Sequence, *, epochs: int = 2,
                      budget: Optional[Budget] = None, seed: int = 0, device=None,
                      progress: bool = True) -> List[Dict[str, Any]]:
    """How good each baseline's cell is: its standalone test accuracy beside the best and median of the
    candidates its search weighed.

    Every genotype (the cell and its candidates, ``entry.candidates``) is built in the skeleton of
    ``budget`` (default: the dictionary's recorded budget), trained alone with
    :func:`~ftdfast.train.train_model` for ``epochs`` on the baseline's training data and scored on its test
    data (a report, not a selection: nothing is chosen on these numbers). ``baselines``: the dictionary's
    tasks as ``TaskData`` (matched by fingerprint). Returns one dict per baseline: ``name``, ``cell``
    (accuracy of the chosen cell), ``best``, ``median``, ``rank`` (1 = the best candidate), ``candidates``
    (how many), ``accuracies`` (per candidate, in ``entry.candidates`` order).
    """
    if budget is None:
        budget = Budget.from_dict(dictionary.meta["budget"]) if "budget" in dictionary.meta else Budget()
    by_fp = {t.fingerprint(): t for t in baselines}
    rows = []
    for entry in dictionary.entries:
        td = by_fp.get(entry.fingerprint)
        if td is None:
            raise ValueError(f"dictionary_report: no TaskData given for baseline {entry.name!r} (fingerprint "
                             "mismatch): pass the tasks the dictionary was built on")
        genotypes = list(entry.candidates) or [entry.genotype]
        if entry.genotype not in genotypes:
            genotypes.insert(0, entry.genotype)
        accs = []
        for k, g in enumerate(genotypes):
            net = _network(entry.space, g, budget, td, derive_seed(seed, "report", entry.fingerprint, k))
            res = train_model(net, td, TrainConfig(epochs=epochs, batch_size=budget.batch_size),
                              seed=derive_seed(seed, "report-batches", k), device=device, progress=progress)
            accs.append(float(res.test_accuracy))
        cell = accs[genotypes.index(entry.genotype)]
        rows.append({"name": entry.name, "cell": cell, "best": max(accs), "median": _median(accs),
                     "rank": 1 + sum(a > cell for a in accs), "candidates": len(accs), "accuracies": accs,
                     "epochs": epochs})
    return rows


def report_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    """The quality report as a markdown table (accuracies in %)."""
    lines = ["| baseline | its cell (%) | best candidate (%) | median candidate (%) | rank of the cell |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {100 * r['cell']:.2f} | {100 * r['best']:.2f} | {100 * r['median']:.2f} | "
                     f"{r['rank']} of {r['candidates']} |")
    return "\n".join(lines) + "\n"
