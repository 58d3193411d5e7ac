"""Searches in the NAS-Bench-201 space, scored by the benchmark's recorded accuracies (no training of the pick).

Run from the repository root::

    .venv/bin/python -m benchmarks.evidence.nasbench201 simulate --seeds 200 --json benchmarks/evidence/nasbench201_sim.json
    .venv/bin/python -m benchmarks.evidence.nasbench201 search --seeds 10 --json benchmarks/evidence/nasbench201_search.json
    nice -n 5 .venv/bin/python -m benchmarks.evidence.nasbench201 schedules --seeds 10 --rounds 4 --w-steps 16 \
        --json benchmarks/evidence/nasbench201_schedules.json

``--table`` (default ``../shared/datasets/nasbench201-accuracies.csv``) is the table; ftdfast itself takes it as
an argument (:func:`ftdfast.nas.load_nasbench201`).

**simulate** (table only, seconds): TA-NAS for CIFAR-100 with a dictionary whose cells are the table's best
cells of CIFAR-10 and ImageNet16-120 (by their validation columns). Both use the operations {skip_connect,
nor_conv_1x1, nor_conv_3x3}, so whichever baseline the task distance picks, the restricted space is the cells on
those operations (3^6 = 729 of 15,625). Per seed, each search samples ``--candidates`` distinct cells of its
space and keeps the one with the best ``cifar100_val`` (an ideal selector: what FUSE would pick if it ranked
perfectly), scored by ``cifar100_test``. Spaces compared: the general space; the optimized dictionary's
restriction; a *weakly searched* dictionary (its cell is the best of ``--weak`` random cells on CIFAR-10
validation, drawn per seed), restricted to that cell's operations; a random cell's operations. Also each
space with no selection at all (a random member: the space's mean).

**search** (CPU training, minutes): on the real CIFAR-10 subset (``../shared/datasets/cifar10-small.npz``,
``--train`` images, average-pooled to ``--size`` pixels), at a small budget: FUSE in the general space
(:func:`ftdfast.nas.fuse_search`), random search in the general space (:func:`ftdfast.nas.random_search`), and
the restricted search (FUSE in the space of ImageNet16-120's best cell, i.e. TA-NAS with that dictionary entry
as the closest baseline; the distance step is not run here). Each pick is scored by the table's
``cifar10_test`` column, with its percentile among the 15,625 cells. Seeds: each method's search seed is
``derive_seed(seed, method)``. FUSE runs the default schedule (``Budget.schedule``). ``--weight-loss-study``
instead runs the ``"threshold"`` schedule with ``weight_loss="mixture"`` and ``"own"`` on the same candidate
pools (the second draws its seed under the first's name) and random search. (The committed JSON of these modes
and of **diagnose** predate the schedules: FUSE then gave each cell ``rounds * w_steps`` steps per run, and random
search drew its pool under another label, so rerunning them now gives other numbers.)

**diagnose** (CPU training, minutes): why FUSE picks worse cells than random search in the general space. Per
seed, FUSE with the ``"threshold"`` schedule in the general space (alpha fitted to convergence,
``--alpha-steps``), again with ``--few-alpha-steps`` (the old, unconverged alpha) and with ``weight_loss="own"``,
and random search. For every
pool it scores each candidate by the table and reports: the pool's mean and best cell, the pick's rank in its pool
(1 = the pool's best by the table; chance is the pool's middle) and its gain over the pool's mean (0 on average
for a random member), how concentrated alpha is after the first round (largest softmax weight), whether the
first round's argmax is the final pick (``locked_in``), and the rank of the candidate FUSE would pick by its *own*
validation accuracy after the same training (``by_own_val``).

**curves** (CPU training, a minute): the learning curves behind one FUSE pool. The pool of ``--iteration`` of the
general-space FUSE search of ``--seed`` (as **search** draws it, the incumbent left out), each candidate trained
alone on the search's training split for ``--epochs`` epochs (one ``train_model`` call each, so Adam's state
restarts every epoch), its validation accuracy printed after each, beside
its table accuracy: do the cells that lead after a few steps (where FUSE picks) lead at the end?

**schedules** (CPU training, about 2 CPU minutes per seed at ``--rounds 4 --w-steps 16``): every FUSE
schedule (``Budget.schedule``: halving, paper, threshold) and random search at equal total weight steps
(:meth:`ftdfast.nas.Budget.plan`: each spends at most random search's ``pool * random_search_steps``; the
threshold schedule stops early, so less), all with one search seed per seed, so they share the train/validation
split and their first pool (halving weighs exactly random search's pool, from the same initial weights). Per
method: the pick's table accuracy (``cifar10_test``), its gain over the mean of the cells the search weighed, the
weight steps spent, and the pick minus random search's pick, paired by seed. Resumable: the ``--json`` file is
rewritten after every search and a rerun with the same budget skips what it holds.

Intervals: mean ± std over seeds and a t 95% interval of the mean (of the paired differences where paired).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

from .fuse_quality import mean_interval
from ftdfast.atomic import atomic_write_text
from ftdfast.progress import progress_bar
from ftdfast.nas import Budget, NB201Space, derive_seed, fuse_search, load_nasbench201, random_search
from ftdfast.nas.search import DEFAULT_SCHEDULE, SplitData

def shared_file(name: str) -> str:
    """``../shared/datasets/NAME`` beside the repository, else ``/work/shared/datasets/NAME`` (the project's
    machines), else the first of those paths (so the error names it)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    places = [os.path.normpath(os.path.join(root, "..", "shared", "datasets", name)),
              os.path.join("/work", "shared", "datasets", name)]
    return next((q for q in places if os.path.exists(q)), places[0])


DEFAULT_TABLE = shared_file("nasbench201-accuracies.csv")
DEFAULT_CIFAR = shared_file("cifar10-small.npz")


def stats(v: List[float]) -> Dict[str, Any]:
    m, half = mean_interval(v)
    return {"mean": m, "std": statistics.stdev(v) if len(v) > 1 else None, "ci95": half, "n": len(v)}


def fmt(s: Dict[str, Any]) -> str:
    std = "n/a" if s["std"] is None else f"{s['std']:.2f}"
    ci = "n/a" if s["ci95"] is None else f"{s['mean'] - s['ci95']:.2f}-{s['mean'] + s['ci95']:.2f}"
    return f"{s['mean']:.2f} ± {std} (95% CI of the mean {ci})"


# ------------------------------------------------------------------------------------------ table only
def simulate(args) -> Dict[str, Any]:
    table = load_nasbench201(args.table)
    general = NB201Space()
    dictionary = {"cifar10": table.best("cifar10_val"), "imagenet16": table.best("imagenet16_val")}
    op_sets = {name: g.op_set for name, g in dictionary.items()}
    restricted = general.restrict_to(dictionary["cifar10"])
    assert all(general.restrict_to(g) == restricted for g in dictionary.values()), op_sets
    val, test = "cifar100_val", "cifar100_test"

    def search(space: NB201Space, seed: int, select: bool) -> float:
        cands = space.sample_many(min(args.candidates, space.size()), seed=seed)
        pick = max(cands, key=lambda g: table.accuracy(g, val)) if select else cands[0]
        return table.accuracy(pick, test)

    results: Dict[str, List[float]] = {}
    sizes: Dict[str, List[int]] = {}
    for s in range(args.seeds):
        weak_pool = general.sample_many(args.weak, seed=derive_seed(s, "weak"))
        weak = general.restrict_to(max(weak_pool, key=lambda g: table.accuracy(g, "cifar10_val")))
        rand = general.restrict_to(general.sample(derive_seed(s, "random cell")))
        spaces = {"general space": general, "TA-NAS, optimized dictionary": restricted,
                  "weakly searched dictionary": weak, "random cell's operations": rand}
        for name, space in spaces.items():
            for select in (True, False):
                key = f"{name} | {'best of candidates by cifar100_val' if select else 'no selection'}"
                results.setdefault(key, []).append(search(space, derive_seed(s, "search", name), select))
                sizes.setdefault(key, []).append(space.size())
    return {"dictionary": {k: str(g) for k, g in dictionary.items()}, "op_sets": op_sets,
            "candidates": args.candidates, "weak": args.weak, "seeds": args.seeds,
            "best_cifar100_test": max(table.values(test)),
            "results": {k: {**stats(v), "space_size_mean": statistics.fmean(sizes[k]),
                            "percentile_mean": statistics.fmean(table.percentile(x, test) for x in v)}
                        for k, v in results.items()}}


# ------------------------------------------------------------------------------------------ real search
def load_cifar(args):
    import ftdfast
    d = ftdfast.load_dataset(args.cifar)
    g = torch.Generator().manual_seed(0)
    tr = torch.randperm(len(d.y_train), generator=g)[:args.train]
    te = torch.randperm(len(d.y_test), generator=g)[:args.test]
    x_tr, x_te = d.x_train[tr], d.x_test[te]
    if args.size < x_tr.shape[-1]:
        x_tr = F.adaptive_avg_pool2d(x_tr, args.size)
        x_te = F.adaptive_avg_pool2d(x_te, args.size)
    return SplitData(x_tr, d.y_train[tr], x_te, d.y_test[te], int(d.num_classes), "cifar10")


# a method that draws its search seed (so its candidate pools) under another method's name, for paired comparisons
FUSE_GENERAL = "FUSE, general space"      # also the label its search seed is derived from (diagnose, curves)
SAME_POOLS = {"FUSE, own losses, general space": FUSE_GENERAL}


def real_search(args) -> Dict[str, Any]:
    table = load_nasbench201(args.table)
    data = load_cifar(args)
    general = NB201Space()
    baseline = table.best("imagenet16_val")
    restricted = general.restrict_to(baseline)
    budget = Budget(iterations=args.iterations, candidates=args.candidates, rounds=args.rounds,
                    w_steps=args.w_steps, channels=args.channels, layers=args.layers, batch_size=args.batch_size,
                    schedule="threshold" if args.weight_loss_study else DEFAULT_SCHEDULE)
    methods = {FUSE_GENERAL: lambda s: fuse_search(general, data, budget, seed=s, progress=False),
               "random search, general space": lambda s: random_search(general, data, budget, seed=s,
                                                                       progress=False),
               "restricted (TA-NAS space of ImageNet16-120's best cell)":
                   lambda s: fuse_search(restricted, data, budget, seed=s, progress=False)}
    if args.weight_loss_study:
        own = dataclasses.replace(budget, weight_loss="own")
        methods = {FUSE_GENERAL: methods[FUSE_GENERAL],
                   "FUSE, own losses, general space": lambda s: fuse_search(general, data, own, seed=s,
                                                                            progress=False),
                   "random search, general space": methods["random search, general space"]}
    records: List[Dict[str, Any]] = []

    def result() -> Dict[str, Any]:
        summary = {}
        for name in methods:
            rs = [r for r in records if r["method"] == name]
            if rs:
                summary[name] = {"cifar10_test": stats([r["cifar10_test"] for r in rs]),
                                 "percentile": stats([r["percentile"] for r in rs]),
                                 "cpu_seconds": sum(r["cpu_seconds"] for r in rs)}
        done = len({r["seed"] for r in records if all(any(q["seed"] == r["seed"] and q["method"] == m
                                                           for q in records) for m in methods)})
        return {"budget": budget.to_dict(), "data": {"train": args.train, "size": args.size},
                "restricted_to": str(baseline), "restricted_ops": restricted.ops, "seeds": done,
                "seeds_asked": args.seeds, "table_mean_cifar10_test": statistics.fmean(table.values("cifar10_test")),
                "summary": summary, "records": records}

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name, run in methods.items():
            t0 = time.process_time()
            out = run(derive_seed(seed, SAME_POOLS.get(name, name)))
            acc = table.accuracy(out.genotype, "cifar10_test")
            rec = {"seed": seed, "method": name, "cell": str(out.genotype), "cifar10_test": acc,
                   "percentile": table.percentile(acc, "cifar10_test"), "cpu_seconds": time.process_time() - t0}
            records.append(rec)
            print(f"seed {seed} {name}: {rec['cell']} -> {acc:.2f}% (percentile {rec['percentile']:.1f}, "
                  f"{rec['cpu_seconds']:.0f} s CPU)", flush=True)
        if args.json:       # after every seed, so an interrupted run keeps what it finished
            atomic_write_text(args.json, json.dumps(result(), indent=1) + "\n")
    return result()


def _pool_rank(table, genotypes, pick, column="cifar10_test") -> Dict[str, float]:
    """The pick's rank in its pool by the table (1 = best), the pool's mean and best, the chance rank."""
    accs = [table.accuracy(g, column) for g in genotypes]
    mine = table.accuracy(pick, column)
    mean = statistics.fmean(accs)
    return {"rank": 1 + sum(a > mine for a in accs), "pool": len(accs), "chance_rank": (len(accs) + 1) / 2,
            "pool_mean": mean, "pool_best": max(accs), "pick": mine, "gain": mine - mean}


def diagnose(args) -> Dict[str, Any]:
    from ftdfast.nas import NB201Genotype
    table = load_nasbench201(args.table)
    data = load_cifar(args)
    general = NB201Space()
    common = dict(iterations=args.iterations, candidates=args.candidates, rounds=args.rounds, w_steps=args.w_steps,
                  channels=args.channels, layers=args.layers, batch_size=args.batch_size)
    threshold = dict(common, schedule="threshold")          # the schedule this diagnosis is about
    variants = {f"FUSE, alpha to convergence ({args.alpha_steps} steps)": Budget(alpha_steps=args.alpha_steps,
                                                                                 **threshold),
                f"FUSE, {args.few_alpha_steps} alpha steps per round": Budget(alpha_steps=args.few_alpha_steps,
                                                                              **threshold),
                "FUSE, own losses": Budget(alpha_steps=args.alpha_steps, weight_loss="own", **threshold)}
    records: List[Dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        s = derive_seed(seed, FUSE_GENERAL)       # the same search seed as the search mode's FUSE
        for name, budget in variants.items():
            t0 = time.process_time()
            out = fuse_search(general, data, budget, seed=s, progress=False)
            for h in out.history:
                gs = [NB201Genotype.from_dict(g) for g in h["genotypes"]]
                first = h["softmax_history"][1]
                own = h["val_accuracy_history"][-1]
                by_own = max(range(len(gs)), key=lambda k: own[k])
                rec = {"seed": seed, "method": name, "iteration": h["iteration"],
                       "cells": [str(g) for g in gs], "softmax_history": h["softmax_history"],
                       "first_round_max_weight": max(first),
                       "locked_in": max(range(len(first)), key=first.__getitem__) == h["best"],
                       "by_own_val": _pool_rank(table, gs, gs[by_own])["rank"],
                       **_pool_rank(table, gs, gs[h["best"]])}
                records.append(rec)
            print(f"seed {seed} {name}: pick {table.accuracy(out.genotype, 'cifar10_test'):.2f}% "
                  f"({time.process_time() - t0:.0f} s CPU)", flush=True)
        t0 = time.process_time()
        out = random_search(general, data, Budget(alpha_steps=args.alpha_steps, **common),
                            seed=derive_seed(seed, "random search, general space"), progress=False)
        gs = [NB201Genotype.from_dict(h["genotype"]) for h in out.history]
        records.append({"seed": seed, "method": "random search", "iteration": 0, "cells": [str(g) for g in gs],
                        **_pool_rank(table, gs, out.genotype)})
        print(f"seed {seed} random search: pick {table.accuracy(out.genotype, 'cifar10_test'):.2f}% "
              f"({time.process_time() - t0:.0f} s CPU)", flush=True)
        if args.json:
            atomic_write_text(args.json, json.dumps({"records": records}, indent=1) + "\n")
    summary: Dict[str, Any] = {}
    for name in list(variants) + ["random search"]:
        rs = [r for r in records if r["method"] == name]
        summary[name] = {k: stats([float(r[k]) for r in rs]) for k in
                         ("rank", "chance_rank", "pool_mean", "pool_best", "pick", "gain", "first_round_max_weight",
                          "locked_in", "by_own_val") if all(k in r for r in rs)}
        summary[name]["records"] = len(rs)
    return {"budget": common, "data": {"train": args.train, "size": args.size}, "summary": summary,
            "records": records}


SCHEDULE_METHODS = ("halving", "paper", "threshold", "random search")


def _weighed(out) -> List[Any]:
    """Every distinct cell a search weighed (its pool), in first-seen order."""
    from ftdfast.nas import NB201Genotype
    cells: List[Any] = []
    for h in out.history:
        for g in ([h["genotype"]] if "genotype" in h else h["genotypes"]):
            g = NB201Genotype.from_dict(g)
            if g not in cells:
                cells.append(g)
    return cells


def schedules(args) -> Dict[str, Any]:
    """Every FUSE schedule and random search at equal weight steps, paired by seed; see the module docstring."""
    table = load_nasbench201(args.table)
    data = load_cifar(args)
    general = NB201Space()
    common = dict(iterations=args.iterations, candidates=args.candidates, rounds=args.rounds, w_steps=args.w_steps,
                  channels=args.channels, layers=args.layers, batch_size=args.batch_size)
    methods = [m for m in SCHEDULE_METHODS if m in args.methods.split(",")]
    old = json.load(open(args.json)) if args.json and os.path.exists(args.json) else {}
    records: List[Dict[str, Any]] = [r for r in old.get("records", []) if old.get("budget") == common]

    def result() -> Dict[str, Any]:
        by = {(r["seed"], r["method"]): r for r in records}
        seeds = sorted({r["seed"] for r in records if all((r["seed"], m) in by for m in methods)})
        summary: Dict[str, Any] = {}
        for m in methods:
            rs = [by[(s, m)] for s in seeds]
            if not rs:
                continue
            summary[m] = {"pick_cifar10_test": stats([r["pick"] for r in rs]),
                          "gain_over_pool_mean": stats([r["gain"] for r in rs]),
                          "pool_mean": stats([r["pool_mean"] for r in rs]),
                          "pool_size": stats([float(r["pool"]) for r in rs]),
                          "weight_steps": stats([float(r["weight_steps"]) for r in rs]),
                          "cpu_seconds": sum(r["cpu_seconds"] for r in rs)}
            if m != "random search" and "random search" in methods:
                summary[m]["minus_random_search"] = stats([by[(s, m)]["pick"] - by[(s, "random search")]["pick"]
                                                           for s in seeds])
        return {"budget": common, "data": {"train": args.train, "size": args.size}, "methods": methods,
                "seeds": len(seeds), "seeds_asked": args.seeds, "summary": summary, "records": records}

    done = {(r["seed"], r["method"]) for r in records}
    todo = [(seed, m) for seed in range(args.first_seed, args.first_seed + args.seeds) for m in methods
            if (seed, m) not in done]
    with progress_bar(total=len(todo), enabled=True, desc="schedules", unit="search") as bar:
        for seed, m in todo:
            s = derive_seed(seed, "schedules")     # one search seed for every method: the same split and pools
            t0 = time.process_time()
            if m == "random search":
                out = random_search(general, data, Budget(**common), seed=s, progress=False)
            else:
                out = fuse_search(general, data, Budget(schedule=m, **common), seed=s, progress=False)
            rec = {"seed": seed, "method": m, "cell": str(out.genotype), "weight_steps": out.weight_steps,
                   "cpu_seconds": time.process_time() - t0, **_pool_rank(table, _weighed(out), out.genotype)}
            records.append(rec)
            print(f"seed {seed} {m}: pick {rec['pick']:.2f}% (pool mean {rec['pool_mean']:.2f}, rank "
                  f"{rec['rank']}/{rec['pool']}), {rec['weight_steps']} weight steps, {rec['cpu_seconds']:.0f} s CPU",
                  flush=True)
            if args.json:       # after every search, so an interrupted run resumes from here
                atomic_write_text(args.json, json.dumps(result(), indent=1) + "\n")
            bar.update(1)
    return result()


def curves(args) -> List[Dict[str, Any]]:
    from ftdfast.nas.search import _network, _train_val
    from ftdfast.train import TrainConfig, train_model
    table = load_nasbench201(args.table)
    data = load_cifar(args)
    budget = Budget(channels=args.channels, layers=args.layers, batch_size=args.batch_size)
    s = derive_seed(args.seed, FUSE_GENERAL)          # the search seed of the search mode's FUSE
    pool = NB201Space().sample_many(args.candidates, seed=derive_seed(s, "pool", args.iteration))
    train, val = _train_val(data, 0.2, s)
    split = SplitData(*train, *val, int(data.num_classes), "cifar10/curves")
    rows = []
    for k, g in enumerate(pool):
        net = _network(NB201Space(), g, budget, data, derive_seed(s, "init", args.iteration, k))
        accs = [100 * float(train_model(net, split, TrainConfig(epochs=1, batch_size=args.batch_size),
                                        seed=derive_seed(s, "curves", k, e), progress=False).test_accuracy)
                for e in range(args.epochs)]
        rows.append({"cell": str(g), "table": table.accuracy(g, "cifar10_test"), "val_accuracy": accs})
        print(f"table {rows[-1]['table']:.1f}%  validation accuracy after each epoch of "
              f"{-(-len(train[1]) // args.batch_size)} steps: {', '.join(f'{a:.1f}' for a in accs)}  {g}", flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps({"seed": args.seed, "iteration": args.iteration, "rows": rows},
                                                indent=1) + "\n")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("simulate", "search", "diagnose", "curves", "schedules"):
        q = sub.add_parser(name)
        q.add_argument("--table", default=DEFAULT_TABLE)
        q.add_argument("--json", help="write the results here")
        q.add_argument("--first-seed", type=int, default=0)
    sim = sub.choices["simulate"]
    sim.add_argument("--seeds", type=int, default=200)
    sim.add_argument("--candidates", type=int, default=6, help="cells each search weighs")
    sim.add_argument("--weak", type=int, default=6, help="random cells the weak dictionary's search weighs")
    for se in (sub.choices["search"], sub.choices["diagnose"], sub.choices["curves"], sub.choices["schedules"]):
        _real_search_options(se)
    sub.choices["schedules"].add_argument("--methods", default=",".join(SCHEDULE_METHODS),
                                          help="comma-separated, of: " + ", ".join(SCHEDULE_METHODS))
    cu = sub.choices["curves"]
    cu.add_argument("--seed", type=int, default=0)
    cu.add_argument("--iteration", type=int, default=0, help="which FUSE run's pool")
    cu.add_argument("--epochs", type=int, default=4)
    sub.choices["search"].add_argument("--weight-loss-study", action="store_true",
                                       help="FUSE with weight_loss 'mixture' and 'own' on the same candidate pools, "
                                       "and random search (instead of the restricted search)")
    dg = sub.choices["diagnose"]
    dg.add_argument("--alpha-steps", type=int, default=200)
    dg.add_argument("--few-alpha-steps", type=int, default=10, help="the old, unconverged alpha phase")
    args = p.parse_args(argv)
    if not os.path.exists(args.table):
        p.error(f"--table {args.table}: no such file")
    if args.mode == "simulate":
        out = simulate(args)
        print(f"TA-NAS on the NAS-Bench-201 table: target CIFAR-100, {out['seeds']} seeds, {out['candidates']} "
              f"candidates per search; dictionary cells {out['dictionary']}; cifar100_test (%) of the pick:")
        for k, v in out["results"].items():
            print(f"  {k:<75} {fmt(v)}  percentile {v['percentile_mean']:.1f}")
    elif args.mode == "curves":
        torch.set_num_threads(args.threads)
        curves(args)
        return 0
    elif args.mode == "schedules":
        torch.set_num_threads(args.threads)
        out = schedules(args)
        print(f"{out['seeds']} seeds, paired; the pick's table accuracy (cifar10_test, %), its gain over its pool's "
              "mean, and the pick minus random search's pick:")
        for k, v in out["summary"].items():
            print(f"  {k}: pick {fmt(v['pick_cifar10_test'])}; gain {fmt(v['gain_over_pool_mean'])}; weight steps "
                  f"{v['weight_steps']['mean']:.0f}" + (f"; minus random search {fmt(v['minus_random_search'])}"
                                                         if "minus_random_search" in v else ""))
    elif args.mode == "diagnose":
        torch.set_num_threads(args.threads)
        out = diagnose(args)
        print("Per FUSE run (and per random search): the pick's rank in its pool by cifar10_test (1 = best):")
        for k, v in out["summary"].items():
            print(f"  {k} ({v['records']} pools):")
            for q, st in v.items():
                if q != "records":
                    print(f"    {q:<24} {fmt(st)}")
    else:
        torch.set_num_threads(args.threads)
        out = real_search(args)
        print(f"NAS-Bench-201 space, CIFAR-10 subset ({args.train} images at {args.size}x{args.size}), "
              f"{out['seeds']} seeds; the pick's table accuracy (cifar10_test, %; table mean "
              f"{out['table_mean_cifar10_test']:.2f}):")
        for k, v in out["summary"].items():
            print(f"  {k:<60} {fmt(v['cifar10_test'])}; percentile {fmt(v['percentile'])}; "
                  f"{v['cpu_seconds']:.0f} s CPU")
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
    return 0


def _real_search_options(se) -> None:
    se.add_argument("--seeds", type=int, default=10)
    se.add_argument("--cifar", default=DEFAULT_CIFAR)
    se.add_argument("--train", type=int, default=2500)
    se.add_argument("--test", type=int, default=500)
    se.add_argument("--size", type=int, default=16, help="image size after average pooling")
    se.add_argument("--iterations", type=int, default=2)
    se.add_argument("--candidates", type=int, default=4)
    se.add_argument("--rounds", type=int, default=3)
    se.add_argument("--w-steps", type=int, default=15)
    se.add_argument("--channels", type=int, default=8)
    se.add_argument("--layers", type=int, default=1, help="cells per stage")
    se.add_argument("--batch-size", type=int, default=64)
    se.add_argument("--threads", type=int, default=1)


if __name__ == "__main__":
    sys.exit(main())
