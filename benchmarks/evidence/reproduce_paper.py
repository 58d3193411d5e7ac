"""Which Fisher and head policy should the task distance use? The ablation behind the defaults, on real data.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.evidence.reproduce_paper --data-dir ../shared/datasets --out docs/paper

For each dataset (the paper's four MNIST and CIFAR-10 tasks, ``paper_tasks``), architecture and seed,
the epsilon-approximation networks are trained ONCE per head policy (epsilon mode: until the test
accuracy reaches 1 - epsilon, at most ``epochs``, early stop on a plateau) and reused, through the
cache under ``OUT/cache``, by the three Fisher kinds:

- head ``shared`` (every network has the task set's largest class count) or ``legacy`` (each its own
  task's width, zero-padded, as in the authors' code);
- Fisher ``empirical`` (task b's labels fed to N_a), ``exact`` (label-free: the expectation over N_a's
  predictive distribution) or ``mc`` (one label per sample drawn from N_a).

It writes every matrix (mean ± std, JSON and Markdown) under ``OUT/<dataset>/``, and ``OUT/REPORT.md``:
per variant the closest source of each target with its per-seed win count, the gap to the runner-up in
units of the pooled std and whether it is separated from noise; whether the closest sources agree
across architectures and across head policies (a distance that does not depend on the arbitrary
label mapping must give the same answer for both); the paper's findings (MNIST: Tasks 0 and 1 each
other's closest, Task 3 closest to Task 2; CIFAR-10: Task 3 closest to Task 2); and the cost of each
Fisher kind. Rerunning resumes from the cache.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from typing import Dict, List, Tuple

import numpy as np
import torch

from ftdfast.atomic import atomic_write_text
from ftdfast.distance import DistanceMatrix, distance_matrix
from ftdfast.experiment import load_tasks
from ftdfast.train import TrainConfig

HEADS = ("shared", "legacy")
KINDS = ("empirical", "exact", "mc")
# (target, expected closest source): the paper's findings (Section 4, MNIST and CIFAR-10)
FINDINGS: Dict[str, List[Tuple[int, int]]] = {
    "mnist": [(0, 1), (1, 0), (2, 3)],
    "cifar10": [(2, 3)],
}
# per dataset: training/test images kept (seeded sample), epsilon, max epochs, Fisher samples per target
SETTINGS = {
    "mnist": dict(train=4000, test=1000, epsilon=0.05, epochs=10, fisher_samples=256),
    "cifar10": dict(train=2000, test=500, epsilon=0.6, epochs=6, fisher_samples=256),
}
Variant = Tuple[str, str, str]  # (arch, head, fisher)


def run_dataset(dataset: str, args, log) -> Tuple[Dict[Variant, DistanceMatrix], dict]:
    s = dict(SETTINGS[dataset])
    if args.max_train:
        s["train"] = args.max_train
    t0 = time.perf_counter()
    _, tasks = load_tasks(dataset, args.data_dir, "paper", max_train=s["train"], max_test=s["test"])
    s["load_seconds"] = time.perf_counter() - t0
    s["tasks"] = [(t.task.name, len(t.y_train), len(t.y_test), t.num_classes) for t in tasks]
    config = TrainConfig(epochs=s["epochs"], batch_size=64, lr=2e-3, epsilon=s["epsilon"], until_epsilon=True,
                         patience=3)
    s["config"] = config.to_dict()
    seeds = args.seeds if dataset == "mnist" else args.cifar_seeds
    archs = args.archs.split(",") if dataset == "mnist" else args.cifar_archs.split(",")
    s["seeds"], s["archs"] = seeds, archs
    out: Dict[Variant, DistanceMatrix] = {}
    folder = os.path.join(args.out, dataset)
    os.makedirs(folder, exist_ok=True)
    for arch in archs:
        for head in HEADS:
            for kind in KINDS:
                t1 = time.perf_counter()
                with warnings.catch_warnings():  # the misses are in meta and in the report's network table
                    warnings.simplefilter("ignore", RuntimeWarning)
                    m = distance_matrix(tasks, arch, seeds, config=config,
                                        cache_dir=os.path.join(args.out, "cache"),
                                        head=head, fisher=kind, progress=not args.no_progress, batch_size=256,
                                        max_samples=s["fisher_samples"])
                m.meta["wall_seconds"] = time.perf_counter() - t1
                out[(arch, head, kind)] = m
                base = os.path.join(folder, f"{arch}_{head}_{kind}")
                m.save(base + ".json")
                atomic_write_text(base + ".md", m.to_markdown() + "\n\n" + m.closest_markdown() + "\n")
                secs = m.meta["seconds"]
                log(f"{dataset} {arch} head={head} fisher={kind}: train {secs['train']:.0f} s, Fisher "
                    f"{secs['fisher']:.0f} s (this run), wall {m.meta['wall_seconds']:.0f} s; closest " +
                    ", ".join(f"{t}<-{c}" for t, c in m.closest_table().items()))
    return out, s


def _closest_row(m: DistanceMatrix) -> str:
    parts = []
    for t in m.tasks:
        c = m.closest(t)
        sep = {True: "", False: " (tie)", None: " (n/a)"}[c.separated]
        gap = "n/a" if not np.isfinite(c.gap_in_std) else f"{c.gap_in_std:.1f}"
        parts.append(f"{c} {c.wins}/{c.seeds}, gap {gap}σ{sep}")
    return " | ".join(parts)


def analyse(dataset: str, mats: Dict[Variant, DistanceMatrix], s: dict) -> Tuple[List[str], List[dict]]:
    archs = s["archs"]
    tasks = next(iter(mats.values())).tasks
    lines = [f"## {dataset}", "",
             f"Data: a seeded sample of {s['train']} training and {s['test']} test images "
             f"(loading {s['load_seconds']:.1f} s); tasks (train / test images, classes): " +
             "; ".join(f"{n} {a} / {b}, {k}" for n, a, b, k in s["tasks"]) + ".",
             f"Networks: epsilon mode, epsilon = {s['epsilon']}, at most {s['epochs']} epochs, plateau patience 3, "
             f"Adam lr 2e-3, batch 64; {len(s['seeds']) if isinstance(s['seeds'], list) else s['seeds']} seeds; "
             f"Fisher on at most {s['fisher_samples']} test samples of each target, batch 256.", ""]
    # closest sources per variant
    lines += ["### Closest source per target (per-seed wins, gap to the runner-up in pooled std, tie = not "
              "separated at 95%)", "",
              "| arch | head | fisher | " + " | ".join(tasks) + " |", "|---|---|---|" + "---|" * len(tasks)]
    for (arch, head, kind), m in mats.items():
        lines.append(f"| {arch} | {head} | {kind} | {_closest_row(m)} |")
    lines.append("")
    # consistency and label-mapping independence per Fisher kind and head
    summary = []
    lines += ["### Consistency", "",
              "all-seed wins: targets whose closest source wins in every seed (over archs); archs agree: targets "
              "with the same closest source for every architecture; heads agree: (arch, target) pairs with the "
              "same closest source under both head policies (label-mapping independence); max |Δ| heads: the "
              "largest difference of a mean distance between the two head policies; paper: the paper's findings "
              "that hold (over archs).", "",
              "| fisher | head | all-seed wins | archs agree | heads agree | max abs Δ heads | paper | "
              "Fisher s (all archs) | training s (the head's networks, all archs) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    K = len(tasks)
    for kind in KINDS:
        for head in HEADS:
            ms = [mats[(a, head, kind)] for a in archs]
            wins = sum(int(m.closest(t).wins == m.closest(t).seeds) for m in ms for t in tasks)
            agree = sum(int(len({str(m.closest(t)) for m in ms}) == 1) for t in tasks)
            other = "legacy" if head == "shared" else "shared"
            heads = sum(int(str(mats[(a, head, kind)].closest(t)) == str(mats[(a, other, kind)].closest(t)))
                        for a in archs for t in tasks)
            delta = max(float(np.nanmax(np.abs(mats[(a, head, kind)].mean - mats[(a, other, kind)].mean)))
                        for a in archs)
            found = [(m.tasks[t], m.tasks[src], str(m.closest(m.tasks[t])) == m.tasks[src])
                     for m in ms for t, src in FINDINGS.get(dataset, [])]
            fisher_s = sum(m.meta["cost_seconds"]["fisher"] or float("nan") for m in ms)
            train_s = sum(m.meta["cost_seconds"]["train"] for m in ms)
            summary.append({"dataset": dataset, "fisher": kind, "head": head, "wins": wins, "agree": agree,
                            "heads": heads, "delta": delta, "paper": sum(f[2] for f in found),
                            "paper_total": len(found), "fisher_s": fisher_s, "train_s": train_s,
                            "n_archs": len(archs), "K": K})
            lines.append(f"| {kind} | {head} | {wins}/{K * len(archs)} | {agree}/{K} | {heads}/{K * len(archs)} | "
                         f"{delta:.3f} | {sum(f[2] for f in found)}/{len(found)} | {fisher_s:.0f} | {train_s:.0f} |")
    lines.append("")
    # networks
    nets = {}
    for (arch, head, _), m in mats.items():
        for r in m.meta["networks"]:
            nets[(arch, head, r["task"], r["seed"])] = r
    lines += ["### The epsilon-networks", "", "| arch | head | task | test accuracy (per seed) | epochs | "
              "missed epsilon |", "|---|---|---|---|---|---:|"]
    for arch in archs:
        for head in HEADS:
            for t in tasks:
                rs = [r for (a, h, tt, _), r in sorted(nets.items(), key=lambda kv: kv[0][3])
                      if a == arch and h == head and tt == t]
                lines.append(f"| {arch} | {head} | {t} | " + ", ".join(f"{r['test_accuracy']:.3f}" for r in rs)
                             + " | " + ", ".join(str(r["epochs"]) for r in rs) + " | "
                             + str(sum(r["epsilon_ok"] is False for r in rs)) + " |")
    lines.append("")
    # every matrix
    lines += ["### Every matrix (mean ± std over seeds; rows: source, columns: target)", ""]
    for (arch, head, kind), m in mats.items():
        secs, cost = m.meta["seconds"], m.meta["cost_seconds"]
        lines += [f"#### {arch}, head {head}, fisher {kind}", "", m.to_markdown(), "", m.closest_markdown(), "",
                  f"cost: training the networks {cost['train']:.0f} s (shared with the other Fisher kinds), Fisher "
                  f"{cost['fisher']:.0f} s; this run: training {secs['train']:.0f} s, Fisher {secs['fisher']:.0f} s, "
                  f"distance {secs['distance']:.2f} s", ""]
    return lines, summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evidence.reproduce_paper", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join("..", "shared", "datasets"))
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--archs", default="small_cnn,lenet", help="MNIST architectures")
    p.add_argument("--seeds", type=int, default=5, help="MNIST seeds")
    p.add_argument("--cifar-archs", default="small_cnn")
    p.add_argument("--cifar-seeds", type=int, default=3)
    p.add_argument("--max-train", type=int, help="override the training images kept per dataset")
    p.add_argument("--out", default=os.path.join("docs", "paper"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def log(msg):
        print(msg, flush=True)

    started = time.perf_counter()
    cmd = "OMP_NUM_THREADS=1 python -m benchmarks.evidence.reproduce_paper " + " ".join(
        argv if argv is not None else sys.argv[1:])
    body: List[str] = []
    summary: List[dict] = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        mats, s = run_dataset(dataset, args, log)
        lines, rows = analyse(dataset, mats, s)
        body += lines
        summary += rows
    wall = time.perf_counter() - started
    head = ["# Task-distance defaults chosen by an ablation on real data", "",
            f"Command: `{cmd}` (wall time {wall:.0f} s on this run; a rerun resumes from `cache/`).", "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
            f"{torch.get_num_threads()} thread(s), torch {torch.__version__}.", "",
            "## Summary", "",
            "| dataset | fisher | head | all-seed wins | archs agree | heads agree | max abs Δ heads | paper | "
            "Fisher s | training s |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary:
        head.append(f"| {r['dataset']} | {r['fisher']} | {r['head']} | {r['wins']}/{r['K'] * r['n_archs']} | "
                    f"{r['agree']}/{r['K']} | {r['heads']}/{r['K'] * r['n_archs']} | {r['delta']:.3f} | "
                    f"{r['paper']}/{r['paper_total']} | {r['fisher_s']:.0f} | {r['train_s']:.0f} |")
    head.append("")
    os.makedirs(args.out, exist_ok=True)
    text = "\n".join(head + body) + "\n"
    atomic_write_text(os.path.join(args.out, "REPORT.md"), text)
    log(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
