"""Evidence for ftdfast.uses on MNIST, on the CPU: EWC on split MNIST, and Fisher-weighted merging.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.evidence.uses_evidence --data ../shared/datasets/mnist.npz \
        --seeds 5 --out benchmarks/evidence/uses_evidence.json

Both experiments use a small CNN (conv 8@5x5/2 - conv 16@5x5/2 - fc 64 - fc 10, 20.5k parameters) whose
10 output units are shared by the tasks: a task uses its own 5 logits (``TaskCNN.classes``), in training,
in the Fisher and at test ("task-incremental": digits 0-4 are task 1, digits 5-9 task 2, each a 5-way
problem). Every seed redraws the initialisation, the training subsets and the batch order.

EWC. Train task 1, compute its Fisher on ``--fisher-samples`` task-1 training images, train task 2 with
``loss + EWC.penalty``; report task-1 and task-2 test accuracy after task 2. Fishers compared:
``fisher_diagonal`` default (empirical: true labels, per-sample squares), ``fisher="exact"`` (label-free
expectation over the model's predictions), ``backend="legacy"`` (the square of each mini-batch mean gradient,
batch 64 = the training batch, then averaged over each parameter's first dimension as the authors' code
does), and no EWC. The Fishers' scales differ by orders of magnitude, so ``strength = lambda0 * P / tr F``
(P entries: the mean entry gets weight lambda0) and lambda0 is picked per method from ``--lambdas`` by the
mean over seeds of the validation score (task-1 + task-2 validation accuracy) / 2. Validation images are
held out of the training subsets; test images are never used to choose.

Merging. Pretrain one initialisation on ``--pretrain`` images of all digits (10-way), fine-tune a copy on
digits 0-4 (model A) and one on 5-9 (model B), compute each one's Fisher on its own task, merge, and report
the merged model's test accuracy on both tasks (each with its 5 logits) and on all 10 digits (10-way).
Merges: plain average of everything; plain average of the body with each task's own output rows (what
multi-head merging does); ``fisher_merge`` with the empirical and the exact Fisher. ``fisher_merge``'s eps
is ablated on the validation images.

Results (per seed, summaries, the command, CPU time) go to ``--out`` (JSON, atomic) and a Markdown summary
is printed. Paired differences against the baseline carry a 95% t-interval over seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast
from ftdfast.atomic import atomic_write_text
from ftdfast.uses import EWC, fisher_merge

TASKS = {1: (0, 5), 2: (5, 10)}  # task -> its digits lo..hi-1, which are also its logits
BATCH = 64


class TaskCNN(nn.Module):
    """conv(8, 5x5, stride 2) - ReLU - conv(16, 5x5, stride 2) - ReLU - fc(256 -> 64) - ReLU - fc(64 -> 10).
    ``forward`` returns logits[:, lo:hi] for ``self.classes = (lo, hi)`` (n, hi - lo)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, stride=2)
        self.conv2 = nn.Conv2d(8, 16, 5, stride=2)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)
        self.classes = (0, 10)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        z = self.fc2(F.relu(self.fc1(h.flatten(1))))
        return z[:, self.classes[0]:self.classes[1]]


# ------------------------------------------------------------------ data
def load_mnist(path: str):
    with np.load(path) as z:
        out = {}
        for split in ("train", "test"):
            x = torch.from_numpy(z[f"x_{split}"]).float().div_(255).unsqueeze(1)
            out[split] = (x, torch.from_numpy(z[f"y_{split}"]).long())
    return out


def task_split(mnist, task: int, n_train: int, n_val: int, rng: np.random.Generator):
    """Training, validation (disjoint, from MNIST's training images) and test sets of a task; labels 0..4."""
    lo, hi = TASKS[task]
    x, y = mnist["train"]
    idx = np.flatnonzero((y.numpy() >= lo) & (y.numpy() < hi))
    idx = rng.permutation(idx)
    tr, va = idx[:n_train], idx[n_train:n_train + n_val]
    xt, yt = mnist["test"]
    te = np.flatnonzero((yt.numpy() >= lo) & (yt.numpy() < hi))
    return {"train": (x[tr], y[tr] - lo), "val": (x[va], y[va] - lo), "test": (xt[te], yt[te] - lo)}


# -------------------------------------------------------------- training
def train(model: TaskCNN, data, classes, *, epochs: int, lr: float, seed: int, ewc: Optional[EWC] = None) -> None:
    """SGD with momentum 0.9, batch 64, on ``classes``' logits, plus ``ewc.penalty`` when given."""
    x, y = data
    model.classes = classes
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), BATCH):
            b = order[start:start + BATCH]
            loss = F.cross_entropy(model(x[b]), y[b])
            if ewc is not None:
                loss = loss + ewc.penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def accuracy(model: TaskCNN, data, classes) -> float:
    x, y = data
    model.classes = classes
    model.eval()
    right = sum(int((model(x[s:s + 2048]).argmax(1) == y[s:s + 2048]).sum()) for s in range(0, len(x), 2048))
    return right / len(x)


def fisher(model: TaskCNN, data, classes, n: int, kind: str) -> ftdfast.FisherDiagonal:
    model.classes = classes
    x, y = data[0][:n], data[1][:n]
    if kind == "legacy":
        return ftdfast.fisher_diagonal(model.eval(), (x, y), backend="legacy", batch_size=BATCH, progress=False)
    return ftdfast.fisher_diagonal(model.eval(), (x, y), fisher=kind, batch_size=256, progress=False)


# ----------------------------------------------------------------- stats
def t975(df: int) -> float:
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, df))
    except ImportError:  # pragma: no cover
        return {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}.get(df, 2.0)


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' in percent; 'n/a' for the spread of one seed."""
    v = np.asarray(values, dtype=float) * 100
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f} ± n/a"


def paired(values: Sequence[float], base: Sequence[float]) -> str:
    """Mean difference in percentage points with its 95% t-interval over seeds."""
    d = (np.asarray(values, dtype=float) - np.asarray(base, dtype=float)) * 100
    if len(d) < 2:
        return f"{d.mean():+.2f} (n/a)"
    half = t975(len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]"


# ------------------------------------------------------------------- EWC
EWC_METHODS = ("none", "empirical", "exact", "legacy")


def ewc_seed(mnist, seed: int, args) -> Dict:
    rng = np.random.default_rng(seed)
    t1 = task_split(mnist, 1, args.train, args.val, rng)
    t2 = task_split(mnist, 2, args.train, args.val, rng)
    torch.manual_seed(seed)
    model = TaskCNN()
    train(model, t1["train"], TASKS[1], epochs=args.epochs, lr=args.lr, seed=seed)
    before = {"task1_test": accuracy(model, t1["test"], TASKS[1])}
    theta1 = {k: v.clone() for k, v in model.state_dict().items()}
    fishers, fisher_s = {}, {}
    for kind in EWC_METHODS[1:]:
        t0 = time.process_time()
        fishers[kind] = fisher(model, t1["train"], TASKS[1], args.fisher_samples, kind)
        fisher_s[kind] = time.process_time() - t0
    runs = []
    for method in EWC_METHODS:
        for lam0 in ([0.0] if method == "none" else args.lambdas):
            model.load_state_dict(theta1)
            ewc = None
            if method != "none":
                f = fishers[method]
                strength = lam0 * f.numel() / f.trace()
                ewc = EWC(model, f, strength=strength)
            train(model, t2["train"], TASKS[2], epochs=args.epochs, lr=args.lr, seed=seed + 1000, ewc=ewc)
            runs.append({"method": method, "lambda0": lam0, "strength": ewc.strength if ewc else 0.0,
                         **{f"task{t}_{s}": accuracy(model, d[s], TASKS[t]) for t, d in ((1, t1), (2, t2))
                            for s in ("val", "test")}})
    return {"seed": seed, "before": before, "fisher_cpu_s": fisher_s,
            "fisher_trace": {k: f.trace() for k, f in fishers.items()}, "runs": runs}


def summarize_ewc(per_seed: List[Dict], lambdas: Sequence[float]) -> Tuple[Dict, str]:
    def runs(method, lam0):
        return [next(r for r in s["runs"] if r["method"] == method and r["lambda0"] == lam0) for s in per_seed]

    chosen, lines = {}, []
    for method in EWC_METHODS:
        grid = [0.0] if method == "none" else list(lambdas)
        scores = {lam: float(np.mean([(r["task1_val"] + r["task2_val"]) / 2 for r in runs(method, lam)]))
                  for lam in grid}
        chosen[method] = max(grid, key=lambda lam: scores[lam])
    base = runs("none", 0.0)
    lines.append("| method | lambda0 (strength) | task 1 after task 2 | task 2 | mean of both | task 1 vs none "
                 "(95% CI) | mean vs none (95% CI) |")
    lines.append("|---|---|---|---|---|---|---|")
    for method in EWC_METHODS:
        rs = runs(method, chosen[method])
        t1, t2 = [r["task1_test"] for r in rs], [r["task2_test"] for r in rs]
        avg = [(a + b) / 2 for a, b in zip(t1, t2)]
        bavg = [(r["task1_test"] + r["task2_test"]) / 2 for r in base]
        strength = np.mean([r["strength"] for r in rs])
        lam = "-" if method == "none" else f"{chosen[method]:g} ({strength:.3g})"
        d1 = "-" if method == "none" else paired(t1, [r["task1_test"] for r in base])
        da = "-" if method == "none" else paired(avg, bavg)
        lines.append(f"| {method} | {lam} | {mean_std(t1)} | {mean_std(t2)} | {mean_std(avg)} | {d1} | {da} |")
    lines.append("")
    lines.append("Validation score (task-1 + task-2 val accuracy) / 2 per lambda0, mean over seeds:")
    lines.append("")
    lines.append("| method | " + " | ".join(f"{lam:g}" for lam in lambdas) + " |")
    lines.append("|---|" + "---|" * len(lambdas))
    for method in EWC_METHODS[1:]:
        cells = [f"{100 * np.mean([(r['task1_val'] + r['task2_val']) / 2 for r in runs(method, lam)]):.2f}"
                 for lam in lambdas]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Paired differences between Fishers at each one's chosen lambda0 (test, 95% CI):")
    lines.append("")
    emp = runs("empirical", chosen["empirical"])
    for other in ("exact", "legacy"):
        o = runs(other, chosen[other])
        both = [[(r["task1_test"] + r["task2_test"]) / 2 for r in rs] for rs in (emp, o)]
        lines.append(f"- empirical - {other}: task 1 "
                     f"{paired([r['task1_test'] for r in emp], [r['task1_test'] for r in o])}, mean of both "
                     f"{paired(*both)}")
    before = [s["before"]["task1_test"] for s in per_seed]
    lines.append("")
    lines.append(f"Task 1 test accuracy before task 2: {mean_std(before)}.")
    return chosen, "\n".join(lines)


# --------------------------------------------------------------- merging
MERGES = ("A alone", "B alone", "pretrained", "average", "average body + own heads", "fisher empirical",
          "fisher exact")


def own_heads(avg: Dict, a: Dict, b: Dict) -> Dict:
    out = dict(avg)
    for name in ("fc2.weight", "fc2.bias"):
        v = a[name].clone()
        v[TASKS[2][0]:] = b[name][TASKS[2][0]:]
        out[name] = v
    return out


def merge_seed(mnist, seed: int, args) -> Dict:
    rng = np.random.default_rng(10_000 + seed)
    t1 = task_split(mnist, 1, args.train, args.val, rng)
    t2 = task_split(mnist, 2, args.train, args.val, rng)
    x, y = mnist["train"]
    pre_idx = torch.from_numpy(rng.permutation(len(x))[:args.pretrain])
    torch.manual_seed(seed)
    pre = TaskCNN()
    train(pre, (x[pre_idx], y[pre_idx]), (0, 10), epochs=1, lr=args.lr, seed=seed)
    theta0 = {k: v.clone() for k, v in pre.state_dict().items()}
    models = {}
    for name, task, data in (("A", 1, t1), ("B", 2, t2)):
        m = TaskCNN()
        m.load_state_dict(theta0)
        train(m, data["train"], TASKS[task], epochs=args.merge_epochs, lr=args.lr, seed=seed + 7 * task)
        models[name] = m
    fishers = {(name, kind): fisher(models[name], data["train"], TASKS[task], args.fisher_samples, kind)
               for name, task, data in (("A", 1, t1), ("B", 2, t2)) for kind in ("empirical", "exact")}
    sa, sb = models["A"].state_dict(), models["B"].state_dict()
    avg = {k: (sa[k] + sb[k]) / 2 for k in sa}
    states = {"A alone": sa, "B alone": sb, "pretrained": theta0, "average": avg,
              "average body + own heads": own_heads(avg, sa, sb)}
    for kind in ("empirical", "exact"):
        for eps in args.eps:
            states[f"fisher {kind} eps={eps:g}"] = fisher_merge(
                [models["A"], models["B"]], [fishers["A", kind], fishers["B", kind]], eps=eps, normalize=False)
    probe = TaskCNN()
    full = mnist["test"]
    result = {}
    for name, state in states.items():
        probe.load_state_dict(state)
        result[name] = {"A_val": accuracy(probe, t1["val"], TASKS[1]), "B_val": accuracy(probe, t2["val"], TASKS[2]),
                        "A_test": accuracy(probe, t1["test"], TASKS[1]),
                        "B_test": accuracy(probe, t2["test"], TASKS[2]),
                        "all10_test": accuracy(probe, full, (0, 10))}
    return {"seed": seed, "results": result}


def summarize_merge(per_seed: List[Dict], eps_grid: Sequence[float]) -> Tuple[Dict, str]:
    def col(name, key):
        return [s["results"][name][key] for s in per_seed]

    lines = ["Validation (A + B) / 2 per eps, mean over seeds:", "",
             "| Fisher | " + " | ".join(f"{e:g}" for e in eps_grid) + " |", "|---|" + "---|" * len(eps_grid)]
    chosen = {}
    for kind in ("empirical", "exact"):
        scores = {e: float(np.mean([(a + b) / 2 for a, b in zip(col(f"fisher {kind} eps={e:g}", "A_val"),
                                                                  col(f"fisher {kind} eps={e:g}", "B_val"))]))
                  for e in eps_grid}
        chosen[kind] = max(eps_grid, key=lambda e: scores[e])
        lines.append(f"| {kind} | " + " | ".join(f"{100 * scores[e]:.2f}" for e in eps_grid) + " |")
    base = [(a + b) / 2 for a, b in zip(col("average", "A_test"), col("average", "B_test"))]
    lines += ["", "Test (A + B) / 2 per eps: mean ± std, and the paired difference to plain averaging (95% CI):", "",
              "| Fisher | " + " | ".join(f"{e:g}" for e in eps_grid) + " |", "|---|" + "---|" * len(eps_grid)]
    for kind in ("empirical", "exact"):
        cells = []
        for e in eps_grid:
            m = [(a + b) / 2 for a, b in zip(col(f"fisher {kind} eps={e:g}", "A_test"),
                                             col(f"fisher {kind} eps={e:g}", "B_test"))]
            cells.append(f"{mean_std(m)}; {paired(m, base)}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "| model | task A (0-4) | task B (5-9) | mean of A, B | all 10 digits | mean vs average (95% CI) |",
              "|---|---|---|---|---|---|"]
    base = [(a + b) / 2 for a, b in zip(col("average", "A_test"), col("average", "B_test"))]
    for name in MERGES:
        key = name if not name.startswith("fisher") else f"{name} eps={chosen[name.split()[1]]:g}"
        label = name if not name.startswith("fisher") else f"{name} (eps {chosen[name.split()[1]]:g})"
        a, b = col(key, "A_test"), col(key, "B_test")
        m = [(x + y) / 2 for x, y in zip(a, b)]
        d = "-" if name in ("average", "A alone", "B alone", "pretrained") else paired(m, base)
        lines.append(f"| {label} | {mean_std(a)} | {mean_std(b)} | {mean_std(m)} | "
                     f"{mean_std(col(key, 'all10_test'))} | {d} |")
    return chosen, "\n".join(lines)


# ------------------------------------------------------------------ main
def progress(result, what: str, seed: int, cpu_start: float):
    print(f"{what} seed {seed} done, {time.process_time() - cpu_start:.0f} s CPU so far", file=sys.stderr, flush=True)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/datasets/mnist.npz")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the EWC experiment")
    p.add_argument("--train", type=int, default=6000, help="training images per task (a seeded sample)")
    p.add_argument("--val", type=int, default=1000, help="validation images per task (held out of training)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per task (EWC)")
    p.add_argument("--merge-epochs", type=int, default=2, help="fine-tuning epochs per task (merging)")
    p.add_argument("--pretrain", type=int, default=2000, help="images of all digits for the shared initialisation")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (momentum 0.9)")
    p.add_argument("--fisher-samples", type=int, default=2000)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3])
    p.add_argument("--eps", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0],
                   help="fisher_merge floors to compare (relative to the mean Fisher entry)")
    p.add_argument("--merge-seeds", type=int, default=10)
    p.add_argument("--only", choices=["ewc", "merge"])
    p.add_argument("--out", default="benchmarks/evidence/uses_evidence.json")
    p.add_argument("--summarize", metavar="JSON", help="print the summary of a saved run (no training)")
    args = p.parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            saved = json.load(f)
        if "ewc" in saved:
            print(summarize_ewc(saved["ewc"]["per_seed"], saved["args"]["lambdas"])[1], end="\n\n")
        if "merge" in saved:
            print(summarize_merge(saved["merge"]["per_seed"], saved["args"]["eps"])[1])
        return 0
    torch.set_num_threads(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    mnist = load_mnist(args.data)
    given = argv if argv is not None else sys.argv[1:]
    report = {"command": " ".join(["python -m benchmarks.evidence.uses_evidence"] + given),
              "args": vars(args), "torch": torch.__version__, "ftdfast": ftdfast.__version__,
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    text = []
    if args.only in (None, "ewc"):
        t = time.process_time()
        per = [progress(ewc_seed(mnist, s, args), "EWC", s, t) for s in range(args.seeds)]
        chosen, table = summarize_ewc(per, args.lambdas)
        report["ewc"] = {"per_seed": per, "chosen_lambda0": chosen, "cpu_s": time.process_time() - t}
        text += [f"## EWC on split MNIST ({args.seeds} seeds, {report['ewc']['cpu_s']:.0f} s CPU)", "", table, ""]
    if args.only in (None, "merge"):
        t = time.process_time()
        per = [progress(merge_seed(mnist, s, args), "merge", s, t) for s in range(args.merge_seeds)]
        chosen, table = summarize_merge(per, args.eps)
        report["merge"] = {"per_seed": per, "chosen_eps": chosen, "cpu_s": time.process_time() - t}
        text += [f"## Merging ({args.merge_seeds} seeds, {report['merge']['cpu_s']:.0f} s CPU)", "", table, ""]
    report["cpu_s"], report["wall_s"] = time.process_time() - cpu0, time.perf_counter() - wall0
    report["summary"] = "\n".join(text)
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print("\n".join(text))
    print(f"total {report['cpu_s']:.0f} s CPU, {report['wall_s']:.0f} s wall, {report['threads']} thread; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
