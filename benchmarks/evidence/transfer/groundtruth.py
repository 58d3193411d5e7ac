"""A ground truth for transfer: fine-tune every source network on every target task, against training from scratch.

Run from the repository root (resumable: every unit of work is one JSON file under ``--out``; a rerun skips
what is done; the source networks are cached under ``--out/cache``)::

    .venv/bin/python -m benchmarks.evidence.transfer.groundtruth run      # train sources, fine-tune, scratch (CPU, ~1 h)
    .venv/bin/python -m benchmarks.evidence.transfer.groundtruth asym     # transfer both ways between source tasks
    .venv/bin/python -m benchmarks.evidence.transfer.groundtruth collect  # -> groundtruth.csv, groundtruth_asym.csv

**One input format.** Every image, from MNIST, Fashion-MNIST or the CIFAR-10 subset, becomes 3 x 32 x 32 in
[0, 1] (grey images zero-padded from 28 to 32 and repeated over 3 channels), normalized by the fixed
``(x - 0.5) / 0.5``, so every source network can take every target.

**Sources** (:data:`SOURCES`, 9 tasks over 3 datasets: full, subset and binary as in the paper): ``small_cnn``
networks with a 10-output head, trained with the task distance's defaults
(:data:`ftdfast.distance.matrix.DEFAULT_CONFIG`: epsilon mode, epsilon 0.02, at most 20 epochs, patience 3) on
at most ``--source-train`` images of the dataset's *training* split (the epsilon check on 1,000 other training
images), seeds 0, 1, 2.

**Targets** (:data:`TARGETS`, 6 tasks): built from the dataset's *test* split only, so no target image was ever
seen by a source: ``--shots`` training images per class (the small-data regime where the choice of source
matters) from one half of the test split, up to ``--target-test`` test images per class from the other half.

**Recipe** (:func:`finetune`, one for all): a copy of the network, its head (``fc2``) replaced by a fresh
``Linear(64, k)``, all weights trained by Adam (lr 1e-3, batch 32) for ``--steps`` steps, eval mode for the
test accuracy, which is recorded after each step count in :data:`CHECKPOINTS` (the speed of transfer).
*Scratch* is the same recipe from a fresh ``small_cnn``. Seed s of a (source, target) pair fine-tunes the
source network of seed s with data order and head seeded by s; scratch seed s uses the same data order, so
``gain = finetuned - scratch`` is paired per seed.

``collect`` writes one row per (source, target, seed) and per (scratch, target, seed) with the accuracy at every
checkpoint; :mod:`benchmarks.evidence.transfer.compare` reads it.
"""
from __future__ import annotations

import argparse
import copy
import csv
import gzip
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ftdfast.atomic import atomic_write_text
from ftdfast.cache import Cache
from ftdfast.data.labeled import LabeledData
from ftdfast.distance.matrix import DEFAULT_CONFIG
from ftdfast.models import build_model
from ftdfast.progress import progress_bar
from ftdfast.tasks import Task, TaskData
from ftdfast.train import get_trained, seed_everything

from ..records import read_json_records

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "datasets"))
FASHION = "/usr/share/datasets/fashion-mnist"
ARCH = "small_cnn"
HEAD_WIDTH = 10
SEEDS = (0, 1, 2)
CHECKPOINTS = (25, 50, 100, 200, 300)
#: The data and recipe sizes (command-line defaults here and in :mod:`benchmarks.evidence.transfer.compare`, which must
#: rebuild the very targets and source data of the ground truth).
SOURCE_TRAIN, SHOTS, TARGET_TEST, STEPS = 5000, 100, 200, 300

FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Spec:
    """A task of the ground truth: ``dataset`` in {"mnist", "fashion", "cifar10"} and a :class:`Task`."""
    dataset: str
    task: Task

    @property
    def name(self) -> str:
        return self.task.name


SOURCES: Tuple[Spec, ...] = (
    Spec("mnist", Task("mnist-all")),
    Spec("mnist", Task("mnist-0to4", classes=(0, 1, 2, 3, 4))),
    Spec("fashion", Task("fashion-all")),
    Spec("fashion", Task("fashion-shoes", classes=(5, 7, 9))),
    Spec("fashion", Task("fashion-tops", classes=(0, 2, 4, 6))),
    Spec("fashion", Task("fashion-bag-or-not", classes=(8,), binary=True)),
    Spec("cifar10", Task("cifar-all")),
    Spec("cifar10", Task("cifar-vehicles", classes=(0, 1, 8, 9))),
    Spec("cifar10", Task("cifar-animals", classes=(2, 3, 4, 5, 6, 7))),
)

TARGETS: Tuple[Spec, ...] = (
    Spec("mnist", Task("mnist-5to9", classes=(5, 6, 7, 8, 9))),
    Spec("mnist", Task("mnist-even-or-odd", classes=(0, 2, 4, 6, 8), binary=True)),
    Spec("fashion", Task("fashion-coat-shirt", classes=(4, 6))),
    Spec("fashion", Task("fashion-trouser-dress-sandal-bag", classes=(1, 3, 5, 8))),
    Spec("cifar10", Task("cifar-cat-dog", classes=(3, 5))),
    Spec("cifar10", Task("cifar-plane-bird-ship-frog", classes=(0, 2, 8, 6))),
)


# ---------------------------------------------------------------------------------------------- data
def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def raw_dataset(name: str, shared: str = SHARED, fashion: str = FASHION) -> Dict[str, np.ndarray]:
    """The uint8 arrays x_train, y_train, x_test, y_test of one dataset."""
    if name == "mnist":
        z = np.load(os.path.join(shared, "mnist.npz"))
        return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    if name == "cifar10":
        z = np.load(os.path.join(shared, "cifar10-small.npz"))
        return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    if name == "fashion":
        files = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
                 "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}
        missing = [f for f in files.values() if not os.path.exists(os.path.join(fashion, f))]
        if missing:
            raise FileNotFoundError(f"Fashion-MNIST is not in {fashion} (missing {missing}): "
                                    "`apt-get install dataset-fashion-mnist`")
        return {k: _read_idx(os.path.join(fashion, f)) for k, f in files.items()}
    raise ValueError(f"unknown dataset {name!r}")


def common_format(x: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w) or (n, h, w, 3) -> float32 (n, 3, 32, 32), ``(x / 255 - 0.5) / 0.5``."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if t.dim() == 3:
        pad = (32 - t.shape[1]) // 2
        t = F.pad(t, (pad, 32 - t.shape[2] - pad, pad, 32 - t.shape[1] - pad))
        t = t.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    else:
        t = t.permute(0, 3, 1, 2).contiguous()
    return t.sub_(0.5).div_(0.5)


def _classes(dataset: str) -> Tuple[str, ...]:
    return {"mnist": MNIST_CLASSES, "fashion": FASHION_CLASSES, "cifar10": CIFAR_CLASSES}[dataset]


def source_data(dataset: str, n_train: int, raw=None) -> LabeledData:
    """Training-split images only: ``n_train`` to train on, 1,000 others as the epsilon check (its 'test')."""
    raw = raw or raw_dataset(dataset)
    perm = np.random.default_rng(1234).permutation(len(raw["y_train"]))
    tr, te = perm[:n_train], perm[n_train:n_train + 1000]
    x = raw["x_train"]
    return LabeledData(f"{dataset}-source", common_format(x[tr]), torch.from_numpy(raw["y_train"][tr].astype(np.int64)),
                       common_format(x[te]), torch.from_numpy(raw["y_train"][te].astype(np.int64)),
                       _classes(dataset), (0.5,) * 3, (0.5,) * 3)


def target_data(spec: Spec, shots: int, per_class_test: int, raw=None) -> TaskData:
    """The target task from the dataset's test split: ``shots`` training images per class from one half,
    at most ``per_class_test`` test images per class from the other half (seeded, fixed for all runs)."""
    raw = raw or raw_dataset(spec.dataset)
    y_all = raw["y_test"].astype(np.int64)
    perm = np.random.default_rng(4321).permutation(len(y_all))
    half = len(perm) // 2
    a, b = perm[:half], perm[half:]
    x = raw["x_test"]
    data = LabeledData(f"{spec.dataset}-target", common_format(x[a]), torch.from_numpy(y_all[a]),
                       common_format(x[b]), torch.from_numpy(y_all[b]), _classes(spec.dataset), (0.5,) * 3,
                       (0.5,) * 3)
    built = spec.task.build(data, seed=0)
    g = np.random.default_rng(99)

    def per_class(y: torch.Tensor, k: int) -> torch.Tensor:
        keep = []
        for c in range(int(y.max()) + 1):
            idx = (y == c).nonzero()[:, 0].numpy()
            keep.append(np.sort(g.choice(idx, size=min(k, len(idx)), replace=False)))
        return torch.from_numpy(np.sort(np.concatenate(keep)))

    tr, te = per_class(built.y_train, shots), per_class(built.y_test, per_class_test)
    return TaskData(spec.task, built.x_train[tr], built.y_train[tr], built.x_test[te], built.y_test[te],
                    num_classes=built.num_classes, loss="cross_entropy", source=built.source)


# ---------------------------------------------------------------------------------------------- training
_SOURCE_DATA: Dict[Tuple[str, int], LabeledData] = {}


def source_network(spec: Spec, seed: int, cache: Cache, n_train: int, raw=None, progress: bool = False):
    """(model, TrainResult) of a source, trained with the distance defaults and cached."""
    key = (spec.dataset, n_train)
    if key not in _SOURCE_DATA:
        _SOURCE_DATA[key] = source_data(spec.dataset, n_train, raw)
    data = spec.task.build(_SOURCE_DATA[key], seed=0)
    return get_trained(cache, data, ARCH, seed, DEFAULT_CONFIG, num_outputs=HEAD_WIDTH, progress=progress)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((pred == y).float().mean())


def finetune(model: nn.Module, target: TaskData, seed: int, steps: int, *, lr: float = 1e-3,
             batch_size: int = 32) -> Dict[int, float]:
    """The recipe: new head, all weights trained with Adam; test accuracy after each of :data:`CHECKPOINTS`."""
    torch.manual_seed(10_000 + seed)
    model.fc2 = nn.Linear(model.fc2.in_features, target.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(20_000 + seed)
    x, y = target.x_train, target.y_train
    out: Dict[int, float] = {}
    perm, pos = torch.randperm(len(x), generator=g), 0
    for step in range(1, steps + 1):
        if pos + batch_size > len(x):
            perm, pos = torch.randperm(len(x), generator=g), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        model.train()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in CHECKPOINTS or step == steps:
            out[step] = accuracy(model, target.x_test, target.y_test)
    return out


def scratch_network(target: TaskData, seed: int) -> nn.Module:
    seed_everything(30_000 + seed)
    return build_model(ARCH, in_channels=3, num_classes=HEAD_WIDTH, input_size=32)


def _unit_path(out: str, source: str, target: str, seed: int) -> str:
    return os.path.join(out, "runs", target, f"{source}__seed{seed}.json")


def run(args) -> None:
    torch.set_num_threads(args.threads)
    cache = Cache(os.path.join(args.out, "cache"))
    raws = {d: raw_dataset(d, args.shared, args.fashion) for d in ("mnist", "fashion", "cifar10")}
    sources = [s for s in SOURCES if not args.sources or s.name in args.sources]
    targets = [t for t in TARGETS if not args.targets or t.name in args.targets]
    # 1. every source network (cached); their training record goes to sources/<name>__seed<s>.json
    with progress_bar(total=len(sources) * len(SEEDS), enabled=True, desc="sources", unit="net") as bar:
        for spec in sources:
            for s in SEEDS:
                path = os.path.join(args.out, "sources", f"{spec.name}__seed{s}.json")
                if not os.path.exists(path):
                    _, res = source_network(spec, s, cache, args.source_train, raws[spec.dataset])
                    atomic_write_text(path, json.dumps({
                        "source": spec.name, "dataset": spec.dataset, "seed": s, "task": spec.task.to_dict(),
                        "check_accuracy": res.check_accuracy, "epochs": res.epochs_run,
                        "stop_reason": res.stop_reason, "seconds": res.seconds}, indent=1))
                bar.update(1)
    # 2. scratch and fine-tuning runs, one file each
    units = [(None, t, s) for t in targets for s in SEEDS] + [(src, t, s) for t in targets for src in sources
                                                              for s in SEEDS]
    tdata = {t.name: target_data(t, args.shots, args.target_test, raws[t.dataset]) for t in targets}
    with progress_bar(total=len(units), enabled=True, desc="fine-tune", unit="run") as bar:
        for src, t, s in units:
            name = "scratch" if src is None else src.name
            path = _unit_path(args.out, name, t.name, s)
            if not os.path.exists(path):
                start = time.perf_counter()
                if src is None:
                    model = scratch_network(tdata[t.name], s)
                else:
                    model, _ = source_network(src, s, cache, args.source_train, raws[src.dataset])
                    model = copy.deepcopy(model)
                acc = finetune(model, tdata[t.name], s, args.steps)
                atomic_write_text(path, json.dumps({
                    "source": name, "target": t.name, "seed": s, "steps": args.steps, "shots": args.shots,
                    "n_train": len(tdata[t.name].y_train), "n_test": len(tdata[t.name].y_test),
                    "accuracy": {str(k): v for k, v in acc.items()},
                    "seconds": time.perf_counter() - start}, indent=1))
            bar.update(1)


#: Ordered both ways for the asymmetry question: does d(a, b) < d(b, a) where transfer a -> b beats b -> a?
ASYM_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("mnist-all", "mnist-0to4"), ("fashion-all", "fashion-shoes"), ("cifar-all", "cifar-vehicles"),
    ("fashion-tops", "fashion-shoes"), ("cifar-vehicles", "cifar-animals"), ("mnist-all", "fashion-all"),
)


def asym(args) -> None:
    """Transfer both ways between the source tasks of :data:`ASYM_PAIRS`: source network a fine-tuned on a
    few-shot version of task b (built from b's dataset's test split like every target), and scratch on it."""
    torch.set_num_threads(args.threads)
    cache = Cache(os.path.join(args.out, "cache"))
    raws = {d: raw_dataset(d, args.shared, args.fashion) for d in ("mnist", "fashion", "cifar10")}
    by_name = {s.name: s for s in SOURCES}
    ordered = [p for a, b in ASYM_PAIRS for p in ((a, b), (b, a))]
    tasks = sorted({b for _, b in ordered})
    units = [(None, b, s) for b in tasks for s in SEEDS] + [(a, b, s) for a, b in ordered for s in SEEDS]
    tdata = {b: target_data(by_name[b], args.shots, args.target_test, raws[by_name[b].dataset]) for b in tasks}
    with progress_bar(total=len(units), enabled=True, desc="asymmetry", unit="run") as bar:
        for a, b, s in units:
            name = "scratch" if a is None else a
            path = os.path.join(args.out, "asym", b, f"{name}__seed{s}.json")
            if not os.path.exists(path):
                start = time.perf_counter()
                if a is None:
                    model = scratch_network(tdata[b], s)
                else:
                    model = copy.deepcopy(source_network(by_name[a], s, cache, args.source_train,
                                                         raws[by_name[a].dataset])[0])
                acc = finetune(model, tdata[b], s, args.steps)
                atomic_write_text(path, json.dumps({
                    "source": name, "target": b, "seed": s, "steps": args.steps, "shots": args.shots,
                    "n_train": len(tdata[b].y_train), "n_test": len(tdata[b].y_test),
                    "accuracy": {str(k): v for k, v in acc.items()},
                    "seconds": time.perf_counter() - start}, indent=1))
            bar.update(1)


def _write_csv(rows: List[dict], path: str) -> None:
    steps = sorted({int(k) for r in rows for k in r["accuracy"]})
    rows = sorted(rows, key=lambda r: (r["target"], r["source"] != "scratch", r["source"], r["seed"]))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["target", "source", "seed", "n_train", "n_test"] + [f"acc_{k}" for k in steps])
        for r in rows:
            w.writerow([r["target"], r["source"], r["seed"], r["n_train"], r["n_test"]]
                       + [f"{r['accuracy'].get(str(k), float('nan')):.4f}" for k in steps])
    os.replace(tmp, path)


def collect(args) -> None:
    rows = read_json_records(os.path.join(args.out, "runs"))
    if not rows:
        raise SystemExit(f"no runs under {args.out}/runs: run `run` first")
    _write_csv(rows, args.csv)
    asym_rows = read_json_records(os.path.join(args.out, "asym"))
    if asym_rows:
        _write_csv(asym_rows, args.asym_csv)
    src_rows = read_json_records(os.path.join(args.out, "sources"))
    atomic_write_text(args.sources_json, json.dumps(src_rows, indent=1))
    print(f"{len(rows)} runs -> {args.csv}; {len(asym_rows)} asymmetry runs -> {args.asym_csv}; "
          f"{len(src_rows)} source networks -> {args.sources_json}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("run", "asym", "collect"))
    p.add_argument("--out", default=os.path.join(HERE, "groundtruth"), help="run folder (resumable)")
    p.add_argument("--csv", default=os.path.join(HERE, "groundtruth.csv"))
    p.add_argument("--asym-csv", default=os.path.join(HERE, "groundtruth_asym.csv"))
    p.add_argument("--sources-json", default=os.path.join(HERE, "groundtruth_sources.json"))
    p.add_argument("--shared", default=SHARED, help="folder with mnist.npz and cifar10-small.npz")
    p.add_argument("--fashion", default=FASHION, help="folder with Fashion-MNIST's IDX files")
    p.add_argument("--source-train", type=int, default=SOURCE_TRAIN, help="training images per source dataset")
    p.add_argument("--shots", type=int, default=SHOTS, help="target training images per class")
    p.add_argument("--target-test", type=int, default=TARGET_TEST, help="target test images per class (at most)")
    p.add_argument("--steps", type=int, default=STEPS, help="fine-tuning steps (batch 32)")
    p.add_argument("--sources", nargs="*", help="only these sources (names)")
    p.add_argument("--targets", nargs="*", help="only these targets (names)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    {"run": run, "asym": asym, "collect": collect}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
