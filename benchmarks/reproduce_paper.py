"""Does ftdfast reproduce the paper's qualitative task-distance findings on real data?

    .venv/bin/python -m benchmarks.reproduce_paper --data-dir ../shared/datasets --out docs/paper

runs the paper's MNIST and CIFAR-10 task sets (``paper_tasks``) with small networks and several
seeds through ``ftdfast.experiment.run_distance_experiment`` (resumable: trained networks and
Fisher diagonals are cached under ``OUT/<dataset>/cache``), then checks:

- MNIST: Tasks 0 and 1 are each other's closest source; Task 3 is the closest source to Task 2;
- CIFAR-10: Task 3 is the closest source to Task 2;
- the closest sources agree across architectures, and the gap to the next-closest source is larger
  than the standard deviations over seeds (``gap > std_closest + std_next``).

It writes ``OUT/REPORT.md`` (the tables, the checks, the timings, the command) next to each
dataset's matrices, heatmaps and atlas. Data: ``mnist.npz`` and ``cifar10-small.npz`` (the
repository's ``../shared/datasets``), or anything ``ftdfast.load_dataset`` finds in ``--data-dir``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Dict, List, Tuple

import torch

from ftdfast.atomic import atomic_write_text
from ftdfast.distance import DistanceMatrix
from ftdfast.experiment import run_distance_experiment

# (dataset, target, expected closest source): the paper's findings (Section 4, MNIST and CIFAR-10)
FINDINGS: Dict[str, List[Tuple[int, int]]] = {
    "mnist": [(0, 1), (1, 0), (2, 3)],
    "cifar10": [(2, 3)],
}


def check(dataset: str, matrices: Dict[str, DistanceMatrix]) -> List[dict]:
    rows = []
    for target, source in FINDINGS.get(dataset, []):
        for arch, m in matrices.items():
            t, s = m.tasks[target], m.tasks[source]
            col = m.mean[:, target]
            order = sorted((i for i in range(len(m.tasks)) if i != target), key=lambda i: col[i])
            first, nxt = order[0], order[1]
            gap = col[nxt] - col[first]
            noise = m.std[first, target] + m.std[nxt, target]
            rows.append({"dataset": dataset, "arch": arch, "target": t, "expected": s, "found": m.tasks[first],
                         "holds": m.tasks[first] == s, "gap": gap, "noise": noise, "clear": gap > noise})
    return rows


def agreement(matrices: Dict[str, DistanceMatrix]) -> bool:
    tables = [tuple(m.closest(t) for t in m.tasks) for m in matrices.values()]
    return all(t == tables[0] for t in tables)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce_paper", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join("..", "shared", "datasets"))
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--archs", default="small_cnn,lenet")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--fisher-samples", type=int, default=1000,
                   help="test samples per Fisher (the first of each target's shuffled test split)")
    p.add_argument("--out", default=os.path.join("docs", "paper"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    started = time.perf_counter()
    report = ["# The paper's task-distance findings, reproduced with ftdfast", "",
              "Command: `python -m benchmarks.reproduce_paper " + " ".join(argv if argv is not None else sys.argv[1:])
              + "`", "",
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
              f"{torch.__version__}; {args.seeds} seeds, {args.epochs} epochs (Adam, lr 1e-3, batch 128), "
              f"Fisher on {args.fisher_samples} test samples of each target.", ""]
    checks: List[dict] = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        out = os.path.join(args.out, dataset)
        t0 = time.perf_counter()
        res = run_distance_experiment(dataset, data_dir=args.data_dir, archs=args.archs.split(","), seeds=args.seeds,
                                      epochs=args.epochs, out=out, max_fisher_samples=args.fisher_samples,
                                      progress=not args.no_progress)
        seconds = time.perf_counter() - t0
        rows = check(dataset, res.matrices)
        checks += rows
        report += [f"## {dataset}", ""]
        for arch, m in res.matrices.items():
            secs = m.meta["seconds"]
            share = secs["fisher"] / max(secs["train"] + secs["fisher"], 1e-9)
            report += [f"### {arch}", "", m.to_markdown(), "",
                       f"training {secs['train']:.0f} s, Fisher {secs['fisher']:.0f} s ({share:.0%} of the two); "
                       f"test accuracy per task and seed: " + "; ".join(
                           f"{k} " + ", ".join("-" if a is None else f"{a:.3f}" for a in v)
                           for k, v in m.meta["test_accuracy"].items()), "",
                       f"![mean]({dataset}/distance_{arch}_mean.png) ![atlas]({dataset}/atlas_{arch}.png)", ""]
        report += [f"Closest sources agree across {', '.join(res.matrices)}: "
                   f"**{'yes' if agreement(res.matrices) else 'no'}**. Wall time {seconds:.0f} s "
                   f"(this run, including cached items).", ""]
    report += ["## Findings", "", "| dataset | arch | target | paper: closest | ours | holds | gap | std sum | clear |",
               "|---|---|---|---|---|---|---|---|---|"]
    for r in checks:
        report.append(f"| {r['dataset']} | {r['arch']} | {r['target']} | {r['expected']} | {r['found']} | "
                      f"{'yes' if r['holds'] else 'NO'} | {r['gap']:.3f} | {r['noise']:.3f} | "
                      f"{'yes' if r['clear'] else 'no'} |")
    report += ["", f"Total {time.perf_counter() - started:.0f} s.", ""]
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "REPORT.md"), "\n".join(report))
    print("\n".join(report))
    return 0 if all(r["holds"] for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
