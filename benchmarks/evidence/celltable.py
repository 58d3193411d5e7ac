"""A ground-truth table of our own: every 3-node NAS-Bench-201 cell trained alone on tasks of three datasets.

Run from the repository root (one core, niced; ``OMP_NUM_THREADS=1``)::

    nice -n 5 .venv/bin/python -m benchmarks.evidence.celltable run       # 35 min CPU: 750 units + 30 second seeds
    nice -n 10 .venv/bin/python -m benchmarks.evidence.celltable distance # minutes: -> benchmarks/evidence/celltable_distance.json
    .venv/bin/python -m benchmarks.evidence.celltable collect             # -> celltable.csv, celltable_report.json
    .venv/bin/python -m benchmarks.evidence.celltable fair                # seconds: -> benchmarks/evidence/celltable_fair.json
    nice -n 5 .venv/bin/python -m benchmarks.evidence.celltable search    # real searches scored by the table (resumable)

**The space.** The 125 cells of 3 nodes over NAS-Bench-201's 5 operations (``NB201Space(num_nodes=3)``),
each in the NAS-Bench-201 skeleton at ``--channels`` (8) and 1 cell per stage, inputs average-pooled to 16x16.

**The tasks** (:data:`TASKS`; chosen to prefer different cells: full 10-class tasks, a 4-class subset of
similar classes, two-class tasks of fine distinctions): MNIST (``--mnist``), Fashion-MNIST (``--fashion``, IDX
files) and the CIFAR-10 subset (``--cifar``). Each task is built by :class:`ftdfast.tasks.Task` (seed 0); its
first ``--train`` training images train, the next ``--val`` are the validation split, its first ``--test`` test
images test (1,500 / 500 / 500 by default: cat-vs-dog has 2,000 training images in the CIFAR-10 subset).

**Sizing** (one core of the project's shared 2-core machine, one torch thread): a unit of 1,500 images and 3
epochs takes 1 s CPU (a cell whose output is zero) to 4 s (three 3x3 convolutions), about 2.8 s on average, so
the 750 units take about 35 min CPU; beside 3-4 other processes on that machine they took 57 min. The first
setting tried (1,000 test images, 4 epochs, 10 second seeds per task) measured 3-6 s CPU per unit and would
have ended after the deadline. 3 epochs are about 70 Adam steps: the table ranks cells after short
training (as NAS-Bench-201's 12-epoch table does, more so), so it is ground truth for this budget.

**run**: per unit (task, cell, seed) the network is trained with Adam (lr ``--lr``, batch ``--batch-size``) for
``--epochs`` epochs; after every epoch its validation and test accuracy are recorded. One JSON file per unit
under ``--out`` (``<task>/<cell id>-s<seed>.json``, written atomically), so a rerun skips the units done and an
interrupted one loses only the unit in flight. First every cell on every task with seed 0, then seed 1 for the
``--top`` cells of each task by seed 0's final validation accuracy. A unit's file records the settings; a rerun
with other settings into the same folder is refused (use another ``--out``).

**collect**: the units into one CSV (``--csv``): task, cell, seed, per-epoch validation and test accuracy (%),
the final ones and the epoch of the best validation accuracy; and the report of how different the tasks' best
cells are (``--json``).

**distance**: the Fisher task distance between the tasks (:func:`distance`).

**fair** (section 3 of issue 24): the fair test of TA-NAS's premise on the table (:func:`fair_test`): per target
task and N, the regret of the distance's choice of baseline, of a random one and of the general space, Spearman
(-distance, payoff), an exact permutation test and bootstrap 95% intervals over the targets.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .fuse_quality import _ranks, spearman
from .nasbench201 import shared_file
from .records import read_json_records
from ftdfast.atomic import atomic_write_text
from ftdfast.nas import NB201_OPS, NB201Genotype, NB201Network, NB201Space, NB201Table, derive_seed
from ftdfast.progress import progress_bar
from ftdfast.tasks import Task

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "results", "celltable")   # gitignored
DEFAULT_CSV = os.path.join(HERE, "celltable.csv")
DEFAULT_MATRIX = os.path.join(HERE, "celltable_distance.json")
DEFAULT_FASHION = "/usr/share/datasets/fashion-mnist"
SPACE = NB201Space(num_nodes=3)


@dataclass(frozen=True)
class TableTask:
    """One task of the table: ``dataset`` (``"mnist"``, ``"fashion"``, ``"cifar10"``) and the
    :class:`~ftdfast.tasks.Task` carved out of it (its name is the table's task name)."""
    dataset: str
    task: Task


#: The table's tasks (names are file and column names: no ``:``). Fashion-MNIST's classes: 0 T-shirt/top,
#: 2 pullover, 4 coat, 6 shirt; CIFAR-10's: 3 cat, 5 dog.
TASKS: Tuple[TableTask, ...] = (
    TableTask("mnist", Task("mnist10")),
    TableTask("mnist", Task("mnist4v9", (4, 9))),
    TableTask("fashion", Task("fashion10")),
    TableTask("fashion", Task("fashion_tops", (0, 2, 4, 6))),
    TableTask("cifar10", Task("cifar10", None)),
    TableTask("cifar10", Task("cifar_catdog", (3, 5))),
)
TASK_NAMES = tuple(t.task.name for t in TASKS)


def cell_id(g: NB201Genotype) -> str:
    """A file-name-safe id: the operations' indices in :data:`NB201_OPS`, e.g. ``"304"``."""
    return "".join(str(NB201_OPS.index(op)) for op in g.ops)


# ------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class Split:
    """One task's tensors: x_* (n, c, size, size) float32, y_* (n,) int64 labels in [0, num_classes)."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def load_datasets(args, needed: Sequence[str]) -> Dict[str, Any]:
    import ftdfast
    from ftdfast.data import load_idx
    loaders = {"mnist": lambda: ftdfast.load_dataset(args.mnist),
               "fashion": lambda: load_idx(args.fashion, name="fashion-mnist"),
               "cifar10": lambda: ftdfast.load_dataset(args.cifar)}
    out = {}
    for name in needed:
        path = {"mnist": args.mnist, "fashion": args.fashion, "cifar10": args.cifar}[name]
        if not os.path.exists(path):
            hint = " (apt-get install dataset-fashion-mnist)" if name == "fashion" else ""
            raise SystemExit(f"celltable: {path} not found: the {name} data the table needs{hint}; pass its path "
                             f"with --{ {'mnist': 'mnist', 'fashion': 'fashion', 'cifar10': 'cifar'}[name] }")
        out[name] = loaders[name]()
    return out


def build_split(tt: TableTask, data, args) -> Split:
    """The task's train / validation / test tensors (see the module docstring), average-pooled to ``args.size``."""
    td = tt.task.build(data, seed=0)
    need = args.train + args.val
    if len(td.y_train) < need or len(td.y_test) < args.test:
        raise SystemExit(f"celltable: task {tt.task.name} has {len(td.y_train)} training and {len(td.y_test)} "
                         f"test images; --train + --val = {need} and --test = {args.test} need more")

    def pool(x):
        return F.adaptive_avg_pool2d(x, args.size) if x.shape[-1] != args.size else x

    return Split(pool(td.x_train[:args.train]), td.y_train[:args.train],
                 pool(td.x_train[args.train:need]), td.y_train[args.train:need],
                 pool(td.x_test[:args.test]), td.y_test[:args.test], int(td.num_classes))


# ------------------------------------------------------------------------------------------ one unit
SETTINGS = ("train", "val", "test", "size", "epochs", "channels", "lr", "batch_size")


def settings_of(args) -> Dict[str, Any]:
    return {k: getattr(args, k) for k in SETTINGS}


def unit_path(out: str, task: str, g: NB201Genotype, seed: int) -> str:
    return os.path.join(out, task, f"{cell_id(g)}-s{seed}.json")


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Accuracy (%) of ``net`` (eval mode) on ``x`` (n, c, h, w), ``y`` (n,)."""
    net.eval()
    hits = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return 100.0 * hits / len(y)


def train_unit(split: Split, g: NB201Genotype, seed: int, args, task: str) -> Dict[str, Any]:
    """Train ``g``'s network on ``split`` for ``args.epochs`` epochs; the record of one unit."""
    torch.manual_seed(derive_seed(seed, "init", task, str(g)))
    order = torch.Generator().manual_seed(derive_seed(seed, "order", task, str(g)))
    net = NB201Network(g, channels=args.channels, layers=1, num_classes=split.num_classes,
                       in_channels=split.x_train.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    val, test, losses = [], [], []
    t0 = time.process_time()
    for _ in range(args.epochs):
        net.train()
        perm = torch.randperm(len(split.y_train), generator=order)
        total = 0.0
        for i in range(0, len(perm), args.batch_size):
            b = perm[i:i + args.batch_size]
            loss = F.cross_entropy(net(split.x_train[b]), split.y_train[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        losses.append(total / len(perm))
        val.append(accuracy(net, split.x_val, split.y_val))
        test.append(accuracy(net, split.x_test, split.y_test))
    return {"task": task, "cell": str(g), "seed": seed, "val": val, "test": test, "train_loss": losses,
            "cpu_seconds": time.process_time() - t0, "settings": settings_of(args)}


def read_unit(path: str, args) -> Optional[Dict[str, Any]]:
    """The unit's record if its file exists (SystemExit if it was made with other settings), else None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rec = json.load(f)
    if rec.get("settings") != settings_of(args):
        raise SystemExit(f"celltable: {path} was made with settings {rec.get('settings')}, this run's are "
                         f"{settings_of(args)}; pass another --out, or the same settings to resume")
    return rec


def run_units(units: List[Tuple[str, NB201Genotype, int]], splits: Dict[str, Split], args, desc: str) -> int:
    """Train the units whose files are missing; the number trained."""
    todo = [u for u in units if read_unit(unit_path(args.out, *u), args) is None]
    print(f"{desc}: {len(units) - len(todo)} of {len(units)} units done, {len(todo)} to train", file=sys.stderr)
    with progress_bar(total=len(todo), enabled=True, desc=desc, unit="unit") as bar:
        for task, g, seed in todo:
            atomic_write_text(unit_path(args.out, task, g, seed),
                              json.dumps(train_unit(splits[task], g, seed, args, task)))
            bar.update(1)
    return len(todo)


def top_cells(task: str, k: int, args) -> List[NB201Genotype]:
    """The ``k`` cells with the best final validation accuracy of seed 0 on ``task`` (ties: space order)."""
    cells = list(SPACE.genotypes())
    final = {g: read_unit(unit_path(args.out, task, g, 0), args)["val"][-1] for g in cells}
    return sorted(cells, key=lambda g: -final[g])[:k]


def run(args) -> None:
    tasks = [t for t in TASKS if t.task.name in args.tasks]
    data = load_datasets(args, sorted({t.dataset for t in tasks}))
    splits = {t.task.name: build_split(t, data[t.dataset], args) for t in tasks}
    cells = list(SPACE.genotypes())[:args.limit]
    run_units([(t, g, 0) for t in splits for g in cells], splits, args, "seed 0")
    if args.top and args.limit is None:
        run_units([(t, g, 1) for t in splits for g in top_cells(t, args.top, args)], splits, args, "seed 1")


# ------------------------------------------------------------------------------------------ collect
def read_units(out: str) -> List[Dict[str, Any]]:
    """Every unit record under ``out`` (any settings: :func:`collect` checks that they agree)."""
    if not os.path.isdir(out):
        raise SystemExit(f"celltable: {out} holds no units; run `python -m benchmarks.evidence.celltable run` first")
    recs = []
    for task in sorted(os.listdir(out)):
        folder = os.path.join(out, task)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as f:
                    recs.append(json.load(f))
    return recs


def write_csv(recs: List[Dict[str, Any]], path: str) -> None:
    """One row per unit: task, cell, seed, val_1..val_E, test_1..test_E (%), val, test (the last epoch's) and
    best_epoch (1-based, of the highest validation accuracy, the first if tied)."""
    settings = {json.dumps(r["settings"], sort_keys=True) for r in recs}
    if len(settings) != 1:
        raise SystemExit(f"celltable: the units were made with {len(settings)} different settings: {settings}")
    E = recs[0]["settings"]["epochs"]
    head = (["task", "cell", "seed"] + [f"val_{e}" for e in range(1, E + 1)] + [f"test_{e}" for e in range(1, E + 1)]
            + ["val", "test", "best_epoch"])
    lines = [",".join(head)]
    for r in sorted(recs, key=lambda r: (TASK_NAMES.index(r["task"]), r["seed"], cell_id(NB201Genotype.from_string(
            r["cell"])))):
        best = max(range(E), key=lambda e: (r["val"][e], -e)) + 1
        lines.append(",".join([r["task"], r["cell"], str(r["seed"])] + [f"{v:.2f}" for v in r["val"] + r["test"]]
                              + [f"{r['val'][-1]:.2f}", f"{r['test'][-1]:.2f}", str(best)]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_table(path: str = DEFAULT_CSV, seed: int = 0, tasks: Optional[Sequence[str]] = None) -> NB201Table:
    """The committed table as an :class:`~ftdfast.nas.NB201Table` of seed ``seed``'s final accuracies: columns
    ``<task>_val`` and ``<task>_test`` (%) for every task (or those of ``tasks``), one row per cell (every task
    must hold every cell)."""
    if not os.path.exists(path):
        raise SystemExit(f"celltable: {path} not found; make it with `python -m benchmarks.evidence.celltable collect`")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["seed"]) == seed and (tasks is None or r["task"] in tasks)]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    values = {f"{t}_{k}": {} for t in tasks for k in ("val", "test")}
    for r in rows:
        for k in ("val", "test"):
            values[f"{r['task']}_{k}"][r["cell"]] = float(r[k])
    missing = [(c, t) for t in tasks for c in cells if c not in values[f"{t}_val"]]
    if missing:
        raise SystemExit(f"celltable: {path} lacks {len(missing)} (cell, task) pairs of seed {seed}, e.g. "
                         f"{missing[0]}; finish the run and collect again")
    return NB201Table([NB201Genotype.from_string(c) for c in cells],
                      {k: [v[c] for c in cells] for k, v in values.items()}, source=path)


def table_tasks(table: NB201Table) -> List[str]:
    return [c[:-len("_val")] for c in table.columns if c.endswith("_val")]


def _ranks_desc(v: Sequence[float]) -> List[float]:
    """1 = the highest, average ranks for ties."""
    n = len(v)
    return [n + 1 - r for r in _ranks(v)]


def report(table: NB201Table, path: str) -> Dict[str, Any]:
    """How different the tasks' best cells are (see the module docstring of ``collect``)."""
    tasks = table_tasks(table)
    out: Dict[str, Any] = {"tasks": tasks, "cells": len(table), "best": {}, "best_cell_ranks": {}}
    for t in tasks:
        g = table.best(f"{t}_val")
        test = table.values(f"{t}_test")
        out["best"][t] = {"cell": str(g), "ops": list(g.op_set), "val": table.accuracy(g, f"{t}_val"),
                          "test": table.accuracy(g, f"{t}_test"), "best_test_of_table": max(test),
                          "mean_test": statistics.fmean(test),
                          "top5_by_val": [str(c) for c in sorted(table.cells,
                                                                 key=lambda c: -table.accuracy(c, f"{t}_val"))[:5]]}
    # each task's best cell, ranked by validation accuracy on every task (1 = that task's best)
    for t in tasks:
        g = table.best(f"{t}_val")
        out["best_cell_ranks"][t] = {u: _ranks_desc(table.values(f"{u}_val"))[table.cells.index(g)] for u in tasks}
    out["distinct_best_cells"] = len({b["cell"] for b in out["best"].values()})
    out["distinct_best_op_sets"] = len({tuple(b["ops"]) for b in out["best"].values()})
    # rank correlation of the cells' test accuracies between tasks (all cells: a correlation inside the union of
    # two tasks' top cells would be negative by selection alone)
    out["spearman_test_all_cells"] = {f"{a}|{b}": spearman(table.values(f"{a}_test"), table.values(f"{b}_test"))
                                      for i, a in enumerate(tasks) for b in tasks[i + 1:]}
    # the noise ceiling of those: within a task, validation against test accuracy (two independent samples of
    # the same trained networks), all cells and the top 25 by validation
    within = {}
    for t in tasks:
        v, te = table.values(f"{t}_val"), table.values(f"{t}_test")
        top = [k for k, r in enumerate(_ranks_desc(v)) if r <= 25]
        within[t] = {"all": spearman(v, te), "top25": spearman([v[k] for k in top], [te[k] for k in top])}
    out["spearman_val_test_within_task"] = within
    return out


def seed_noise(csv_path: str) -> Dict[str, Any]:
    """Per task, over the cells with two seeds: the mean absolute difference of the final test accuracy between
    the seeds, Spearman of the two seeds' validation (and test) accuracies, and whether seed 0's best cell stays
    best by the mean of both seeds' validation accuracies."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    by = {}
    for r in rows:
        by.setdefault((r["task"], r["cell"]), {})[int(r["seed"])] = (float(r["val"]), float(r["test"]))
    out = {}
    for t in dict.fromkeys(r["task"] for r in rows):
        two = {c: v for (task, c), v in by.items() if task == t and 0 in v and 1 in v}
        if len(two) < 2:
            continue
        cells = list(two)
        best0 = max(cells, key=lambda c: two[c][0][0])
        best_mean = max(cells, key=lambda c: two[c][0][0] + two[c][1][0])
        out[t] = {"cells": len(cells),
                  "mean_abs_test_diff": statistics.fmean(abs(two[c][0][1] - two[c][1][1]) for c in cells),
                  "spearman_val_seed0_seed1": spearman([two[c][0][0] for c in cells], [two[c][1][0] for c in cells]),
                  "spearman_test_seed0_seed1": spearman([two[c][0][1] for c in cells], [two[c][1][1] for c in cells]),
                  "seed0_best_is_best_by_mean": best0 == best_mean, "best_by_mean": best_mean}
    return out


def collect(args) -> None:
    recs = read_units(args.out)
    write_csv(recs, args.csv)
    table = load_table(args.csv)
    rep = {"report": report(table, args.csv), "seed_noise": seed_noise(args.csv), "units": len(recs),
           "settings": recs[0]["settings"]}
    atomic_write_text(args.json, json.dumps(rep, indent=1) + "\n")
    r = rep["report"]
    print(f"{len(recs)} units -> {args.csv}; {r['distinct_best_cells']} distinct best cells, "
          f"{r['distinct_best_op_sets']} distinct operation sets over {len(r['tasks'])} tasks")
    for t, b in r["best"].items():
        print(f"  {t:15s} {b['cell']:55s} val {b['val']:.1f} test {b['test']:.1f} "
              f"(best test {b['best_test_of_table']:.1f}, mean {b['mean_test']:.1f}) ops {b['ops']}")
    print("  Spearman of test accuracies, all cells: " + ", ".join(f"{k} {v:+.2f}" for k, v in
                                                                  r["spearman_test_all_cells"].items()))


# ------------------------------------------------------------------------------------------ distances
def distance(args) -> None:
    """The Fisher task distance between the table's tasks with the task-distance defaults (``small_cnn``,
    :data:`ftdfast.distance.matrix.DEFAULT_CONFIG`, the exact Fisher, a shared head, ``--seeds`` seeds), on
    the table's own splits (training images train the networks, the test images carry the Fisher); grey
    images are repeated to 3 channels so that every task shares one input shape. Networks and Fishers are
    cached under ``--cache``; the matrix goes to ``--matrix``."""
    from ftdfast.distance import distance_matrix
    from ftdfast.tasks import TaskData
    data = load_datasets(args, sorted({t.dataset for t in TASKS}))
    tasks = []
    for tt in TASKS:
        sp = build_split(tt, data[tt.dataset], args)
        rgb = (lambda x: x.expand(-1, 3, -1, -1).contiguous()) if sp.x_train.shape[1] == 1 else (lambda x: x)
        tasks.append(TaskData(tt.task, rgb(sp.x_train), sp.y_train, rgb(sp.x_test), sp.y_test, sp.num_classes,
                              "cross_entropy", source=tt.dataset))
    m = distance_matrix(tasks, "small_cnn", seeds=args.seeds, cache_dir=args.cache)
    m.save(args.matrix)
    print(m.to_markdown())
    print(m.closest_markdown())


# ------------------------------------------------------------------------------------------ the fair test
def _bootstrap(values: Sequence[float], reps: int = 10000, seed: int = 0) -> Tuple[float, float]:
    """Percentile 95% interval of the mean of ``values`` (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=float)
    means = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _permutation_p(payoffs: List[List[float]], chosen: List[float]) -> float:
    """Exact one-sided p of "the distance's choice beats a random entry": the share of all ways to pick one
    entry per target (each alike, as a distance without information would) whose mean payoff is at least the
    distance's. ``payoffs[t]`` are target t's entries' payoffs, ``chosen[t]`` the chosen one's."""
    observed = statistics.fmean(chosen)
    sums = np.zeros(1)
    for row in payoffs:
        sums = (sums[:, None] + np.asarray(row)[None, :]).ravel()
    return float(np.mean(sums / len(payoffs) >= observed - 1e-9))


def fair_test(table: NB201Table, dist, ns: Sequence[int]) -> Dict[str, Any]:
    """For every target task: the dictionary is every other task's best cell (by its validation accuracy);
    a baseline's payoff at N is the expected test accuracy of a random search of N cells restricted to that
    cell's operations, selecting by the target's validation accuracy (:meth:`NB201Table.expected_best_of`).
    ``dist``: a :class:`~ftdfast.distance.DistanceMatrix` over the same tasks (rows sources, columns targets)."""
    tasks = table_tasks(table)
    best = {t: table.best(f"{t}_val") for t in tasks}
    out: Dict[str, Any] = {"tasks": tasks, "dictionary": {t: str(g) for t, g in best.items()},
                           "distance_seeds": dist.num_seeds, "by_n": {}}
    for n in ns:
        per_target, rows = {}, []
        for t in tasks:
            val, test = f"{t}_val", f"{t}_test"
            sources = [b for b in tasks if b != t]
            payoff = {b: table.expected_best_of(n, val, test, SPACE.restrict_to(best[b])) for b in sources}
            d = {b: float(dist.mean[dist.index(b), dist.index(t)]) for b in sources}
            choice = min(sources, key=lambda b: d[b])
            seed_choices = [min(sources, key=lambda b: dist.per_seed[s, dist.index(b), dist.index(t)])
                            for s in range(dist.num_seeds)]
            oracle = max(payoff.values())
            general = table.expected_best_of(n, val, test, SPACE)
            own = table.expected_best_of(n, val, test, SPACE.restrict_to(best[t]))
            rec = {"choice": choice, "choice_per_distance_seed": seed_choices,
                   "oracle": max(sources, key=lambda b: payoff[b]), "payoff": payoff, "distance": d,
                   "space_size": {b: SPACE.restrict_to(best[b]).size() for b in sources},
                   "regret_distance": oracle - payoff[choice],
                   "regret_random": oracle - statistics.fmean(payoff.values()),
                   "regret_general": oracle - general, "general": general,
                   "own_best_cells_ops": own, "best_test_of_table": max(table.values(test)),
                   "spearman_neg_distance_payoff": spearman([-d[b] for b in sources], [payoff[b] for b in sources])}
            per_target[t] = rec
            rows.append(rec)
        summary = {}
        for key in ("regret_distance", "regret_random", "regret_general"):
            v = [r[key] for r in rows]
            summary[key] = {"mean": statistics.fmean(v), "ci95": _bootstrap(v)}
        paired = {"distance_minus_random": [r["regret_random"] - r["regret_distance"] for r in rows],
                  "distance_minus_general": [r["regret_general"] - r["regret_distance"] for r in rows],
                  "oracle_minus_general": [r["regret_general"] for r in rows],
                  "own_ops_minus_general": [r["own_best_cells_ops"] - r["general"] for r in rows]}
        for key, v in paired.items():
            summary[key] = {"mean": statistics.fmean(v), "ci95": _bootstrap(v), "positive": sum(x > 0 for x in v),
                            "negative": sum(x < 0 for x in v)}
        rhos = [r["spearman_neg_distance_payoff"] for r in rows if not math.isnan(r["spearman_neg_distance_payoff"])]
        summary["spearman"] = {"mean": statistics.fmean(rhos) if rhos else math.nan,
                               "ci95": _bootstrap(rhos) if rhos else None, "targets": len(rhos)}
        summary["permutation_p"] = _permutation_p([list(r["payoff"].values()) for r in rows],
                                                  [r["payoff"][r["choice"]] for r in rows])
        summary["choice_is_oracle"] = sum(r["payoff"][r["choice"]] == max(r["payoff"].values()) for r in rows)
        out["by_n"][str(n)] = {"summary": summary, "targets": per_target}
    return out


def fair_markdown(res: Dict[str, Any]) -> str:
    """The summary as a markdown table (points of test accuracy; bootstrap 95% intervals over targets)."""
    def ci(s):
        lo, hi = s["ci95"]
        return f"{s['mean']:+.2f} ({lo:+.2f} to {hi:+.2f})"
    lines = ["| N | regret: distance's choice | regret: random entry | regret: general space | distance minus random "
             "| distance's choice minus general | choice = oracle | Spearman(-d, payoff) | permutation p |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in res["by_n"].items():
        s = r["summary"]
        sp = s["spearman"]
        rho = "n/a" if sp["ci95"] is None else ci(sp)
        lines.append(f"| {n} | {ci(s['regret_distance'])} | {ci(s['regret_random'])} | {ci(s['regret_general'])} | "
                     f"{ci(s['distance_minus_random'])} | {ci(s['distance_minus_general'])} | "
                     f"{s['choice_is_oracle']} of {len(res['tasks'])} | {rho} | {s['permutation_p']:.3f} |")
    return "\n".join(lines)


def fair(args) -> None:
    from ftdfast.distance import DistanceMatrix
    table = load_table(args.csv, tasks=args.tasks)
    if not os.path.exists(args.matrix):
        raise SystemExit(f"celltable: {args.matrix} not found; compute it with `python -m benchmarks.evidence.celltable "
                         "distance`")
    dist = DistanceMatrix.load(args.matrix)
    if not set(table_tasks(table)) <= set(dist.tasks):
        raise SystemExit(f"celltable: the distance matrix's tasks {dist.tasks} lack some of the table's "
                         f"{table_tasks(table)}")
    res = fair_test(table, dist, args.n)
    res["source"] = {"table": os.path.relpath(args.csv), "matrix": os.path.relpath(args.matrix)}
    atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")
    print(fair_markdown(res))


# ------------------------------------------------------------------------------------------ real searches
SEARCH_METHODS = ("paper", "halving", "threshold", "random search", "TA-NAS")
SEARCH_TARGETS = ("mnist10", "fashion10", "cifar10")


def tanas_space(table: NB201Table, dist, target: str) -> Tuple[str, NB201Space]:
    """TA-NAS's space for ``target``: the operations of the dictionary cell (the table's best by validation
    accuracy) of the task closest to ``target`` by the Fisher distance (mean over its seeds)."""
    others = [b for b in table_tasks(table) if b != target]
    closest = min(others, key=lambda b: float(dist.mean[dist.index(b), dist.index(target)]))
    return closest, SPACE.restrict_to(table.best(f"{closest}_val"))


def search_unit(table: NB201Table, dist, data, target: str, method: str, seed: int, budget) -> Dict[str, Any]:
    """One real search on ``target``'s data, its pick scored by the table (``<target>_test``, seed 0), and ranked
    inside the cells it weighed. Every method of one seed uses one search seed (the same split and first pool)."""
    from ftdfast.nas import fuse_search, random_search
    from ftdfast.nas.search import Budget
    from .nasbench201 import _pool_rank, _weighed
    s = derive_seed(seed, "celltable-search", target)
    t0 = time.process_time()
    closest = None
    if method == "random search":
        out = random_search(SPACE, data, budget, seed=s, val_fraction=0.25, progress=False)
    elif method == "TA-NAS":
        closest, space = tanas_space(table, dist, target)
        out = fuse_search(space, data, Budget(**{**budget.to_dict(), "schedule": "paper"}), seed=s,
                          val_fraction=0.25, progress=False)
    else:
        out = fuse_search(SPACE, data, Budget(**{**budget.to_dict(), "schedule": method}), seed=s,
                          val_fraction=0.25, progress=False)
    column = f"{target}_test"
    return {"target": target, "method": method, "seed": seed, "cell": str(out.genotype), "closest": closest,
            "weight_steps": out.weight_steps, "cpu_seconds": time.process_time() - t0,
            "percentile": table.percentile(table.accuracy(out.genotype, column), column),
            "table_best": max(table.values(column)), **_pool_rank(table, _weighed(out), out.genotype, column)}


def search(args) -> None:
    """Real searches scored by the table, resumable (one JSON per (target, method, seed) under ``--out``)."""
    from ftdfast.distance import DistanceMatrix
    from ftdfast.nas.search import Budget
    from ftdfast.tasks import TaskData
    table = load_table(args.csv)
    dist = DistanceMatrix.load(args.matrix)
    budget = Budget(iterations=2, candidates=4, rounds=4, w_steps=16, channels=args.channels, layers=1,
                    batch_size=64)
    by_name = {t.task.name: t for t in TASKS}
    data = load_datasets(args, sorted({by_name[t].dataset for t in args.targets}))
    units = [(t, m, s) for s in range(args.seeds) for t in args.targets for m in args.methods]
    with progress_bar(total=len(units), enabled=True, desc="searches", unit="search") as bar:
        for t, m, s in units:
            path = os.path.join(args.out, t, f"{m.replace(' ', '-')}-s{s}.json")
            if not os.path.exists(path):
                sp = build_split(by_name[t], data[by_name[t].dataset], args)
                td = TaskData(by_name[t].task, torch.cat([sp.x_train, sp.x_val]), torch.cat([sp.y_train, sp.y_val]),
                              sp.x_test, sp.y_test, sp.num_classes, "cross_entropy", source=by_name[t].dataset)
                rec = search_unit(table, dist, td, t, m, s, budget)
                atomic_write_text(path, json.dumps(rec, indent=1) + "\n")
                print(f"{t} {m} seed {s}: {rec['pick']:.2f}% (pool mean {rec['pool_mean']:.2f}, rank {rec['rank']}/"
                      f"{rec['pool']}), {rec['cpu_seconds']:.0f} s CPU", flush=True)
            bar.update(1)
    summary = search_summary(read_json_records(args.out))
    atomic_write_text(args.json, json.dumps(summary, indent=1) + "\n")
    print(search_markdown(summary))


def _t_interval(v: Sequence[float]) -> Dict[str, Any]:
    from scipy import stats as sps
    m = statistics.fmean(v)
    half = float(sps.t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return {"mean": m, "ci95": [m - half, m + half], "n": len(v)}


def search_summary(recs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per method, over every (target, seed) that every method finished: the pick's table accuracy, its gain
    over the mean of the cells its search weighed, and its paired difference with random search (95% t
    intervals over the (target, seed) units)."""
    by = {(r["target"], r["seed"], r["method"]): r for r in recs}
    methods = [m for m in SEARCH_METHODS if any(k[2] == m for k in by)]
    units = sorted({(t, s) for t, s, _ in by if all((t, s, m) in by for m in methods)})
    out: Dict[str, Any] = {"units": len(units), "targets": sorted({t for t, _ in units}), "methods": {}}
    for m in methods:
        rs = [by[(t, s, m)] for t, s in units]
        row = {"pick": _t_interval([r["pick"] for r in rs]), "gain_over_pool_mean": _t_interval([r["gain"] for r in rs]),
               "percentile": _t_interval([r["percentile"] for r in rs]),
               "weight_steps": statistics.fmean(r["weight_steps"] for r in rs),
               "cpu_seconds": sum(r["cpu_seconds"] for r in rs)}
        if m != "random search" and "random search" in methods:
            row["minus_random_search"] = _t_interval([by[(t, s, m)]["pick"] - by[(t, s, "random search")]["pick"]
                                                      for t, s in units])
        if m != "paper" and "paper" in methods:
            row["minus_paper"] = _t_interval([by[(t, s, m)]["pick"] - by[(t, s, "paper")]["pick"] for t, s in units])
        out["methods"][m] = row
    return out


def search_markdown(summary: Dict[str, Any]) -> str:
    def ci(d):
        return f"{d['mean']:+.2f} ({d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f})"
    lines = [f"{summary['units']} (target, seed) units over {', '.join(summary['targets'])}", "",
             "| method | pick's table test accuracy (%) | gain over its pool's mean, 95% CI | minus random search, "
             "paired 95% CI | minus paper, paired 95% CI | percentile in the space | weight steps | CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, r in summary["methods"].items():
        lines.append(f"| {m} | {r['pick']['mean']:.2f} | {ci(r['gain_over_pool_mean'])} | "
                     f"{ci(r['minus_random_search']) if 'minus_random_search' in r else '-'} | "
                     f"{ci(r['minus_paper']) if 'minus_paper' in r else '-'} | {r['percentile']['mean']:.1f} | "
                     f"{r['weight_steps']:.0f} | {r['cpu_seconds']:.0f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI
def add_data_options(q: argparse.ArgumentParser) -> None:
    """The datasets and the tasks' splits (shared by ``run`` and ``distance``)."""
    q.add_argument("--mnist", default=shared_file("mnist.npz"))
    q.add_argument("--fashion", default=DEFAULT_FASHION)
    q.add_argument("--cifar", default=shared_file("cifar10-small.npz"))
    q.add_argument("--train", type=int, default=1500)
    q.add_argument("--val", type=int, default=500)
    q.add_argument("--test", type=int, default=500)
    q.add_argument("--size", type=int, default=16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="train the table's units (resumable)")
    r.add_argument("--out", default=DEFAULT_OUT, help="the folder of unit files")
    add_data_options(r)
    r.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--channels", type=int, default=8)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--top", type=int, default=5, help="cells per task that get a second seed")
    r.add_argument("--limit", type=int, help="only the first LIMIT cells, no second seeds (a timing run)")
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("collect", help="the units -> the CSV table and the report of the tasks' best cells")
    c.add_argument("--out", default=DEFAULT_OUT, help="the folder of unit files")
    c.add_argument("--csv", default=DEFAULT_CSV)
    c.add_argument("--json", default=os.path.join(HERE, "celltable_report.json"))
    c.set_defaults(threads=1)
    d = sub.add_parser("distance", help="the Fisher task distance between the tasks (cached)")
    add_data_options(d)
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--cache", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), "results", "celltable_distance"))
    d.add_argument("--matrix", default=DEFAULT_MATRIX)
    d.add_argument("--threads", type=int, default=1)
    f = sub.add_parser("fair", help="the fair test of TA-NAS's premise on the table (seconds)")
    f.add_argument("--csv", default=DEFAULT_CSV)
    f.add_argument("--matrix", default=DEFAULT_MATRIX)
    f.add_argument("--n", type=int, nargs="+", default=[1, 3, 5, 10, 20, 50], help="cells each search weighs")
    f.add_argument("--json", default=os.path.join(HERE, "celltable_fair.json"))
    f.add_argument("--tasks", nargs="+", choices=TASK_NAMES, help="only these tasks (default: all)")
    f.set_defaults(threads=1)
    se = sub.add_parser("search", help="real searches (FUSE schedules, random search, TA-NAS) scored by the table")
    add_data_options(se)
    se.add_argument("--csv", default=DEFAULT_CSV)
    se.add_argument("--matrix", default=DEFAULT_MATRIX)
    se.add_argument("--targets", nargs="+", default=list(SEARCH_TARGETS), choices=TASK_NAMES)
    se.add_argument("--methods", nargs="+", default=list(SEARCH_METHODS), choices=SEARCH_METHODS)
    se.add_argument("--seeds", type=int, default=10)
    se.add_argument("--channels", type=int, default=8)
    se.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), "results", "celltable_search"))
    se.add_argument("--json", default=os.path.join(HERE, "celltable_search.json"))
    se.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "run":
        run(args)
    elif args.mode == "collect":
        collect(args)
    elif args.mode == "distance":
        distance(args)
    elif args.mode == "search":
        search(args)
    else:
        fair(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
