"""The Fisher floor of fisher_merge, ablated on real transformer merges (issue 23, section 4).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.evidence.merge_floor --seeds 5      # resumable
    .venv/bin/python -m benchmarks.evidence.merge_floor --summarize --out benchmarks/evidence/merge_floor.json  # the table only

Set-up, per seed (every seed redraws the initialisation, the subsets and the batch order):

- a tiny ViT (``transformers.ViTForImageClassification``: image 28x28, 1 channel, patch 7 -> 16 patches + CLS,
  2 layers, hidden 64, 4 heads, MLP 128, 10 outputs; 72k parameters) trained ``--pretrain-epochs`` on
  ``--pretrain`` MNIST images of all digits: the ONE shared initialisation;
- model A: a copy fine-tuned on ``--train`` MNIST images (10 digits); model B: a copy fine-tuned on ``--train``
  Fashion-MNIST images (10 classes, the copied MNIST head retrained); Adam, batch 64, ``--epochs`` each;
- each model's empirical Fisher (``fisher_diagonal``'s default: true labels, the mean of per-sample squared
  gradients) on ``--fisher-samples`` of its own training images;
- the bodies (``vit.*``) are merged, each task keeps its own head (``classifier.*``), and the merged body is
  scored on both tasks: ``--val`` validation images per task (held out of training; used to choose) and
  ``--test`` test images per task (reported).

Merges (``fisher_merge`` on the bodies' state_dicts and Fishers, weights 1/2 each, unless said):

- ``average``: the plain average;
- ``rel-1`` (the default before this ablation), ``rel-1e-2``, ``rel-1e-4``, ``rel-1e-8``: ``eps`` = that number,
  i.e. floor = eps x the mean Fisher entry over both models;
- ``norm-1``, ``norm-1e-2``, ``norm-1e-4``, ``mr-mean``: ``normalize=True`` (each Fisher scaled to unit mean entry)
  and ``eps`` 1, 1e-2, 1e-4, 1e-6 (then the floor is eps itself: ``mr-mean`` is the absolute floor 1e-6 of
  Matena and Raffel on unit-mean Fishers);
- ``mr-l2``: Matena and Raffel's code (github.com/mmatena/model_merging, merging.py): each model's coefficient
  divided by the L2 norm of its whole Fisher, the raw Fisher floored at 1e-6 (both models floored: there is no
  target model here).

The default is the validation-best of fisher_merge's recipes (all but ``average`` and ``mr-l2``).

``flattened`` is the share of body entries where every model's Fisher is at or below the floor (those get the
plain average exactly); ``floored`` the share of (model, entry) values raised to the floor.

One JSON file per (seed, merge) goes to ``--runs`` (reruns skip what exists; the trained models and Fishers of a
seed are cached there too); ``--out`` gets the per-seed table and the summary with paired 95% t-intervals.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast
from ftdfast.atomic import atomic_torch_save, atomic_write_text
from ftdfast.data.formats import read_idx
from ftdfast.uses import fisher_merge
from ftdfast.uses.merge import _unit_mean

BODY, HEAD = "vit.", "classifier."
# fisher_merge's own recipes: name -> (eps, normalize)
RECIPES = {"rel-1": (1.0, False), "rel-1e-2": (1e-2, False), "rel-1e-4": (1e-4, False), "rel-1e-8": (1e-8, False),
           "norm-1": (1.0, True), "norm-1e-2": (1e-2, True), "norm-1e-4": (1e-4, True), "mr-mean": (1e-6, True)}
MR_FLOOR = 1e-6
MERGES = ("average",) + tuple(RECIPES) + ("mr-l2",)
BATCH = 64


def load_npz(path: str):
    with np.load(path) as z:
        return {s: (z[f"x_{s}"], z[f"y_{s}"]) for s in ("train", "test")}


def load_fashion(directory: str):
    r = lambda n: read_idx(os.path.join(directory, n))  # noqa: E731
    return {"train": (r("train-images-idx3-ubyte.gz"), r("train-labels-idx1-ubyte.gz")),
            "test": (r("t10k-images-idx3-ubyte.gz"), r("t10k-labels-idx1-ubyte.gz"))}


def tensors(x: np.ndarray, y: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, 28, 28) -> float (n, 1, 28, 28) standardized per data set's fixed constants."""
    return (torch.from_numpy(x).float().div_(255).sub_(0.5).div_(0.5).unsqueeze(1),
            torch.from_numpy(y.astype(np.int64)))


def split(ds, n_train: int, n_val: int, n_test: int, n_extra: int, rng: np.random.Generator) -> Dict:
    """Disjoint training, validation (and an ``extra`` pre-training pool) from the training images; a test sample."""
    x, y = ds["train"]
    idx = rng.permutation(len(y))
    parts = {"train": idx[:n_train], "val": idx[n_train:n_train + n_val],
             "extra": idx[n_train + n_val:n_train + n_val + n_extra]}
    out = {k: tensors(x[v], y[v]) for k, v in parts.items()}
    xt, yt = ds["test"]
    te = rng.permutation(len(yt))[:n_test]
    out["test"] = tensors(xt[te], yt[te])
    return out


def vit():
    from transformers import ViTConfig, ViTForImageClassification
    cfg = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, num_labels=10,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(cfg)


class Logits(nn.Module):
    """The HF model as a plain classifier: images (n, 1, 28, 28) -> logits (n, 10)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=x).logits


def train(model: nn.Module, data, *, epochs: int, lr: float, seed: int) -> None:
    x, y = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), BATCH):
            b = order[i:i + BATCH]
            loss = F.cross_entropy(model(pixel_values=x[b]).logits, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    x, y = data
    model.eval()
    hits = sum(int((model(pixel_values=x[i:i + 500]).logits.argmax(1) == y[i:i + 500]).sum())
               for i in range(0, len(y), 500))
    return hits / len(y)


def body_fisher(model: nn.Module, data, n: int) -> Dict[str, torch.Tensor]:
    f = ftdfast.fisher_diagonal(Logits(model).eval(), (data[0][:n], data[1][:n]), progress=False, batch_size=250)
    return {k[len("hf."):]: v for k, v in f.items() if k.startswith("hf." + BODY)}


def prepare(seed: int, mnist, fashion, args, path: str) -> Dict:
    """The seed's shared initialisation, fine-tuned models A and B, their body Fishers, the evaluation sets."""
    rng = np.random.default_rng(seed)
    task_a = split(mnist, args.train, args.val, args.test, args.pretrain, rng)
    task_b = split(fashion, args.train, args.val, args.test, 0, rng)
    recipe = {k: getattr(args, k) for k in ("pretrain", "pretrain_epochs", "pretrain_lr", "train", "epochs", "lr",
                                             "val", "test", "fisher_samples")}
    if os.path.exists(path):
        saved = torch.load(path, weights_only=True)
        if saved["recipe"] != recipe:
            raise SystemExit(f"{path} was trained with {saved['recipe']}, not {recipe}: use another --runs folder")
    else:
        t = time.process_time()
        torch.manual_seed(seed)
        init = vit()
        train(init, task_a["extra"], epochs=args.pretrain_epochs, lr=args.pretrain_lr, seed=seed)
        saved = {"init": init.state_dict(), "recipe": recipe}
        for name, task in (("a", task_a), ("b", task_b)):
            m = vit()
            m.load_state_dict(saved["init"])
            train(m, task["train"], epochs=args.epochs, lr=args.lr, seed=seed + (1 if name == "a" else 2))
            saved[name] = m.state_dict()
            saved["fisher_" + name] = body_fisher(m, task["train"], args.fisher_samples)
        saved["cpu_s"] = time.process_time() - t
        atomic_torch_save(saved, path)
    saved["tasks"] = {"a": task_a, "b": task_b}
    return saved


def floor_shares(fishers: Sequence[Dict[str, torch.Tensor]], floors: Sequence[float]) -> Dict[str, float]:
    """Share of entries where every model's Fisher is <= its floor, and of (model, entry) values <= the floor."""
    names = list(fishers[0])
    total = sum(fishers[0][n].numel() for n in names)
    flat = sum(int(torch.stack([f[n] <= fl for f, fl in zip(fishers, floors)]).all(0).sum()) for n in names)
    low = sum(int((f[n] <= fl).sum()) for f, fl in zip(fishers, floors) for n in names)
    return {"flattened": flat / total, "floored": low / (total * len(fishers))}


def merge(kind: str, bodies: List[Dict], fishers: List[Dict]) -> Tuple[Dict, Dict[str, float]]:
    """The merged body and the floor's shares (none for the plain average)."""
    entries = sum(f[n].numel() for f in fishers for n in f)
    mean = sum(float(f[n].sum(dtype=torch.float64)) for f in fishers for n in f) / entries
    if kind == "average":
        return {n: (bodies[0][n].double() + bodies[1][n].double()).div(2).to(bodies[0][n].dtype)
                for n in bodies[0]}, {}
    if kind in RECIPES:
        eps, normalize = RECIPES[kind]
        used = [_unit_mean(f) for f in fishers] if normalize else fishers
        m = 1.0 if normalize else mean  # the mean entry of the (normalized) Fishers
        return fisher_merge(bodies, fishers, eps=eps, normalize=normalize), floor_shares(used, [eps * m] * 2)
    if kind == "mr-l2":  # coefficient / ||F_k||_2, raw Fisher floored at 1e-6 = fisher_merge's eps 1e-6 / mean
        norms = [math.sqrt(sum(float(f[n].double().square().sum()) for n in f)) for f in fishers]
        return (fisher_merge(bodies, fishers, weights=[1 / v for v in norms], eps=MR_FLOOR / mean),
                floor_shares(fishers, [MR_FLOOR] * 2))
    raise ValueError(kind)


def score(body: Dict, own: Dict, task) -> Dict[str, float]:
    m = vit()
    m.load_state_dict({**own, **body})
    return {"val": accuracy(m, task["val"]), "test": accuracy(m, task["test"])}


def run_seed(seed: int, mnist, fashion, args) -> None:
    folder = os.path.join(args.runs, f"seed{seed}")
    os.makedirs(folder, exist_ok=True)
    todo = [k for k in MERGES + ("alone",) if not os.path.exists(os.path.join(folder, k + ".json"))]
    if not todo:
        return
    s = prepare(seed, mnist, fashion, args, os.path.join(folder, "models.pt"))
    bodies = [{n: v for n, v in s[k].items() if n.startswith(BODY)} for k in ("a", "b")]
    fishers = [s["fisher_a"], s["fisher_b"]]
    tasks = s["tasks"]
    for kind in todo:
        t = time.process_time()
        if kind == "alone":  # each fine-tuned model on its own task, and the shared initialisation
            res = {"a": score(bodies[0], s["a"], tasks["a"]), "b": score(bodies[1], s["b"], tasks["b"]),
                   "init_a": score(s["init"], s["init"], tasks["a"]), "train_cpu_s": s["cpu_s"]}
        else:
            body, shares = merge(kind, bodies, fishers)
            res = {"a": score(body, s["a"], tasks["a"]), "b": score(body, s["b"], tasks["b"]), **shares}
        res["cpu_s"] = time.process_time() - t
        atomic_write_text(os.path.join(folder, kind + ".json"), json.dumps(res))
        print(f"seed {seed} {kind}: A {res['a']['test']:.4f} B {res['b']['test']:.4f}", file=sys.stderr, flush=True)


# ------------------------------------------------------------- summary
def t975(df: int) -> float:
    from scipy.stats import t
    return float(t.ppf(0.975, df))


def paired(values: Sequence[float], base: Sequence[float]) -> List[float]:
    """[mean difference, low, high] in percentage points (95% t-interval over seeds)."""
    d = (np.asarray(values) - np.asarray(base)) * 100
    half = t975(len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return [float(d.mean()), float(d.mean() - half), float(d.mean() + half)]


def summarize(runs: str) -> Dict:
    seeds = sorted(int(d[4:]) for d in os.listdir(runs) if d.startswith("seed")
                   and all(os.path.exists(os.path.join(runs, d, k + ".json")) for k in MERGES + ("alone",)))
    per = {s: {k: json.load(open(os.path.join(runs, f"seed{s}", k + ".json"))) for k in MERGES + ("alone",)}
           for s in seeds}
    mean_of = lambda r, split: (r["a"][split] + r["b"][split]) / 2  # noqa: E731
    rows = {}
    for k in MERGES:
        vals = {sp: [mean_of(per[s][k], sp) for s in seeds] for sp in ("val", "test")}
        rows[k] = {"val_mean": float(np.mean(vals["val"])) * 100,
                   "test_a": float(np.mean([per[s][k]["a"]["test"] for s in seeds])) * 100,
                   "test_b": float(np.mean([per[s][k]["b"]["test"] for s in seeds])) * 100,
                   "test_mean": float(np.mean(vals["test"])) * 100,
                   "test_mean_std": float(np.std(vals["test"], ddof=1)) * 100 if len(seeds) > 1 else None,
                   "vs_average": paired(vals["test"], [mean_of(per[s]["average"], "test") for s in seeds]),
                   "vs_mr_l2": paired(vals["test"], [mean_of(per[s]["mr-l2"], "test") for s in seeds]),
                   "vs_rel_1": paired(vals["test"], [mean_of(per[s]["rel-1"], "test") for s in seeds]),
                   "flattened": (float(np.mean([per[s][k]["flattened"] for s in seeds]))
                                 if k != "average" else None),
                   "floored": float(np.mean([per[s][k]["floored"] for s in seeds])) if k != "average" else None}
    alone = {"a_test": float(np.mean([per[s]["alone"]["a"]["test"] for s in seeds])) * 100,
             "b_test": float(np.mean([per[s]["alone"]["b"]["test"] for s in seeds])) * 100,
             "init_a_test": float(np.mean([per[s]["alone"]["init_a"]["test"] for s in seeds])) * 100}
    chosen = max(RECIPES, key=lambda k: rows[k]["val_mean"])
    cpu = sum(per[s]["alone"]["train_cpu_s"] + sum(per[s][k]["cpu_s"] for k in MERGES + ("alone",)) for s in seeds)
    return {"seeds": seeds, "rows": rows, "alone": alone, "chosen": chosen, "chosen_eps": RECIPES[chosen][0],
            "chosen_normalize": RECIPES[chosen][1],
            "cpu_s": cpu, "per_seed": {str(s): per[s] for s in seeds}}


def table(summary: Dict) -> str:
    f = lambda x: f"{x[0]:+.2f} [{x[1]:+.2f}, {x[2]:+.2f}]"  # noqa: E731
    lines = ["| merge | val (A+B)/2 | test A (MNIST) | test B (Fashion) | test (A+B)/2 | vs average (95% CI) | "
             "vs M&R (95% CI) | vs eps 1 (95% CI) | flattened | floored |", "|" + "---|" * 10]
    for k, r in summary["rows"].items():
        share = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        lines.append(f"| {k} | {r['val_mean']:.2f} | {r['test_a']:.2f} | {r['test_b']:.2f} | {r['test_mean']:.2f} ± "
                     f"{r['test_mean_std'] or float('nan'):.2f} | {f(r['vs_average'])} | {f(r['vs_mr_l2'])} | "
                     f"{f(r['vs_rel_1'])} | "
                     f"{share(r['flattened'])} | {share(r['floored'])} |")
    a = summary["alone"]
    lines.append(f"\nalone: A on MNIST {a['a_test']:.2f}, B on Fashion {a['b_test']:.2f}, shared init on MNIST "
                 f"{a['init_a_test']:.2f}; seeds {summary['seeds']}; validation-best fisher_merge recipe: "
                 f"{summary['chosen']} (eps {summary['chosen_eps']:g}, normalize {summary['chosen_normalize']}); {summary['cpu_s']:.0f} s CPU")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist", default="../shared/datasets/mnist.npz")
    p.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--pretrain", type=int, default=5000, help="MNIST images of the shared initialisation")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--pretrain-lr", type=float, default=3e-3, help="Adam learning rate of the pre-training")
    p.add_argument("--train", type=int, default=5000, help="fine-tuning images per task")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs per task")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the fine-tuning")
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--fisher-samples", type=int, default=1000)
    p.add_argument("--runs", default="benchmarks/evidence/merge_floor", help="one JSON per (seed, merge); resumable")
    p.add_argument("--out", default="benchmarks/evidence/merge_floor.json")
    p.add_argument("--summarize", action="store_true", help="only summarize --runs into --out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="ftdfast: no Fisher rule for ViTEmbeddings")
    if not args.summarize:
        mnist, fashion = load_npz(args.mnist), load_fashion(args.fashion)
        for seed in range(args.seeds):
            run_seed(seed, mnist, fashion, args)
    summary = summarize(args.runs)
    given = argv if argv is not None else sys.argv[1:]
    summary.update(command=" ".join(["python -m benchmarks.evidence.merge_floor"] + given), args=vars(args),
                   torch=torch.__version__, machine=platform.processor() or platform.machine(), threads=1)
    atomic_write_text(args.out, json.dumps(summary, indent=1))
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
