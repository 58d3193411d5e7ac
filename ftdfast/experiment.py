"""The task-distance experiment behind ``ftdfast distance`` and ``ftdfast demo``.

dataset -> tasks -> for each architecture: ``distance_matrix`` (trained networks and Fisher
diagonals cached under ``out/cache``, so a rerun resumes) -> in ``out``:

    distance_<arch>.json        the DistanceMatrix (per seed, mean, std, metadata)
    distance_<arch>.md          mean ± std table (rows: sources, columns: targets)
    distance_<arch>_mean.png, distance_<arch>_std.png, atlas_<arch>.png
    summary.md                  the closest source of every target, per architecture, and the settings
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

from .atomic import atomic_write_text
from .distance import DistanceMatrix, distance_matrix
from .train import TrainConfig


@dataclass
class ExperimentResult:
    matrices: Dict[str, DistanceMatrix]
    files: List[str] = field(default_factory=list)
    seconds: float = 0.0
    summary: str = ""


def load_tasks(dataset: str, data_dir: Optional[str], tasks: str = "paper", *, max_train: Optional[int] = None,
               max_test: Optional[int] = None, seed: int = 0):
    """The dataset and its task set as built TaskData.

    ``tasks``: ``"paper"`` (the paper's four tasks for the dataset; for data without a paper task set, such
    as an image folder, the same design over its classes: :func:`ftdfast.tasks.class_tasks`), ``"images"``
    (the pixel-to-pixel regression tasks), or comma-separated task indices of that set, e.g. ``"0,1,3"``.
    ``max_train``/``max_test`` keep a seeded random sample of each split (for quick runs; files sorted by class
    stay balanced).
    """
    from .data import load_dataset
    from .tasks import class_tasks, image_tasks, paper_tasks

    data = load_dataset(dataset, data_dir)
    if max_train is not None or max_test is not None:
        data = data.sample(train=max_train, test=max_test, seed=seed)
    if tasks == "images":
        chosen = image_tasks(data)
    else:
        name = paper_family(dataset, data)
        every = paper_tasks(name, data) if name is not None else class_tasks(data)
        if tasks == "paper":
            chosen = every
        else:
            try:
                idx = [int(t) for t in tasks.split(",") if t.strip()]
            except ValueError:
                raise ValueError(f"--tasks must be 'paper', 'images' or task indices like 0,1,3; got {tasks!r}")
            bad = [i for i in idx if not 0 <= i < len(every)]
            if bad or len(idx) < 2:
                raise ValueError(f"--tasks {tasks!r}: need at least two indices in 0..{len(every) - 1}")
            chosen = [every[i] for i in idx]
    return data, [t.build(data, seed=seed) for t in chosen]


def paper_family(dataset: str, data) -> Optional[str]:
    """The paper task set that fits: the dataset's name or file stem (``cifar10-small.npz`` -> ``cifar10``),
    else the loaded data's name; None when none fits (an image folder of your own classes)."""
    from .data.normalize import canonical_name
    from .tasks import PAPER_DATASETS
    for candidate in (os.path.basename(str(dataset)).split(".")[0], getattr(data, "name", "")):
        key = canonical_name(str(candidate))
        if key in PAPER_DATASETS:
            return key
        for family in PAPER_DATASETS:
            if key.startswith((family + "-", family + "_")):
                return family
    return None


def run_distance_experiment(dataset: str = "digits", *, data_dir: Optional[str] = None, tasks: str = "paper",
                            archs: Sequence[str] = ("small_cnn",), seeds: int = 3, epochs: Optional[int] = None,
                            epsilon: Optional[float] = None, validation: Optional[float] = None, out: str = "results", max_train: Optional[int] = None,
                            max_test: Optional[int] = None, device=None, method: str = "fisher",
                            head: str = "shared", fisher: str = "exact", fisher_data: str = "test",
                            strict: bool = False, backend: str = "auto", batch_size: int = 128,
                            max_fisher_samples: Optional[int] = None, config: Optional[TrainConfig] = None,
                            progress: bool = True, log=print) -> ExperimentResult:
    """Run the experiment and write its files under ``out`` (see the module docstring).

    The networks are epsilon-approximations (``distance_matrix``'s default config): trained until the
    test accuracy reaches ``1 - epsilon`` (default 0.02), at most ``epochs`` (default 20) epochs, early
    stopping on a plateau; ``validation`` holds out that fraction of each training split to judge epsilon
    on (and, with ``fisher_data="validation"``, to compute the Fishers on); ``config`` replaces that whole
    configuration. ``meta["seconds"]`` of each
    matrix gets the data loading time (``load``) beside train, Fisher and distance.
    """
    from . import distributed as dist_util
    from .distance.matrix import DEFAULT_CONFIG

    t0 = time.perf_counter()
    rank, _ = dist_util.world()
    data, task_data = load_tasks(dataset, data_dir, tasks, max_train=max_train, max_test=max_test)
    load_seconds = time.perf_counter() - t0
    if rank == 0:
        log(f"{data.name}: {len(data.y_train)} train / {len(data.y_test)} test images, "
            f"{len(task_data)} tasks: " + ", ".join(_describe(t) for t in task_data))
    os.makedirs(out, exist_ok=True)
    if config is None:
        changes = {k: v for k, v in (("epochs", epochs), ("epsilon", epsilon), ("validation", validation))
                   if v is not None}
        config = TrainConfig(**{**DEFAULT_CONFIG.to_dict(), **changes})
    result = ExperimentResult(matrices={})
    for arch in archs:
        m = distance_matrix(task_data, arch, seeds, config=config, cache_dir=os.path.join(out, "cache"),
                            device=device, method=method, head=head, fisher=fisher, fisher_data=fisher_data,
                            strict=strict, progress=progress, backend=backend, batch_size=batch_size,
                            max_samples=max_fisher_samples)
        m.meta.update({"dataset": data.name, "tasks_spec": tasks})
        m.meta["seconds"]["load"] = load_seconds
        result.matrices[arch] = m
        if rank == 0:
            result.files += _write_matrix(m, arch, out)
            log(f"\n{arch}: {method} distance ({fisher} Fisher, head {head}), mean ± std over {len(m.per_seed)} "
                f"seed(s) (rows: source a, columns: target b)\n" + m.to_markdown())
    result.seconds = time.perf_counter() - t0
    if rank == 0:
        result.summary = summarize(result.matrices, dataset=data.name, seconds=result.seconds)
        path = os.path.join(out, "summary.md")
        atomic_write_text(path, result.summary)
        result.files.append(path)
        log("\n" + result.summary)
    return result


def _describe(t) -> str:
    n = getattr(t, "num_classes", None)
    return f"{t.task.name} ({n} classes)" if n else t.task.name


def _write_matrix(m: DistanceMatrix, arch: str, out: str) -> List[str]:
    base = os.path.join(out, f"distance_{arch}")
    files = [base + ".json", base + ".md"]
    m.save(files[0])
    atomic_write_text(files[1], m.to_markdown() + "\n")
    try:
        files += m.plot_heatmaps(base)
        atlas = os.path.join(out, f"atlas_{arch}.png")
        m.plot_atlas(atlas)
        files.append(atlas)
    except ImportError as e:  # matplotlib missing: tables and JSON are still written
        print(f"ftdfast: no plots ({e})")
    return files


def summarize(matrices: Dict[str, DistanceMatrix], *, dataset: str = "", seconds: float = 0.0) -> str:
    """Markdown: per architecture, the closest source of each target, the runner-up, the gap in pooled-std
    units, the per-seed wins and whether the win is separated from noise; then the networks."""
    lines = [f"# Fisher task distance{': ' + dataset if dataset else ''}", ""]
    for arch, m in matrices.items():
        meta = m.meta
        secs = meta.get("seconds", {})
        lines += [f"## {arch}", "",
                  f"{len(m.per_seed)} seed(s), method {meta.get('method')}, {meta.get('fisher')} Fisher, head "
                  f"{meta.get('head')}; " + ", ".join(f"{k} {secs[k]:.1f} s" for k in ("load", "train", "fisher",
                                                                                           "distance") if k in secs),
                  "", m.closest_markdown(), ""]
        nets = meta.get("networks") or []
        if nets:
            lines += ["epsilon-networks (test accuracy, epochs; per seed): " + "; ".join(
                f"{t} " + ", ".join(f"{r['test_accuracy']:.3f} ({r['epochs']})" for r in nets if r["task"] == t
                                    and r["test_accuracy"] is not None)
                for t in m.tasks)]
        for miss in meta.get("epsilon_misses") or []:
            lines.append(f"- missed epsilon: {miss}")
        lines.append("")
    if seconds:
        lines.append(f"total {seconds:.0f} s")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ task-aware NAS
def _paper_task_data(dataset: str, data_dir: Optional[str], indices: Sequence[int], *, max_train=None,
                     max_test=None):
    data, every = load_tasks(dataset, data_dir, "paper", max_train=max_train, max_test=max_test)
    bad = [i for i in indices if not 0 <= i < len(every)]
    if bad:
        raise ValueError(f"{dataset} has paper tasks 0..{len(every) - 1}; got {bad}")
    return data, [every[i] for i in indices]


def parse_target(spec: str):
    """``"mnist:2"`` -> ("mnist", 2): a dataset and the index of one of its paper tasks."""
    name, _, idx = str(spec).rpartition(":")
    if not name or not idx.isdigit():
        raise ValueError(f"--target must look like DATASET:TASK_INDEX (e.g. mnist:2 or digits:2), got {spec!r}")
    return name, int(idx)


def build_task_dictionary(dataset: str = "digits", *, data_dir: Optional[str] = None,
                          tasks: Sequence[int] = (0, 1, 3), out: str = "dictionary.json", budget=None,
                          arch: str = "small_cnn", seeds: int = 3, epochs: int = 2,
                          max_train: Optional[int] = None, max_test: Optional[int] = None, device=None,
                          cache_dir: Optional[str] = None, progress: bool = True, log=print,
                          epsilon: Optional[float] = None):
    """Build (or resume) a TA-NAS dictionary from the paper tasks ``tasks`` of ``dataset``.

    The task distance's networks train for ``epochs`` epochs; with ``epsilon``, in the epsilon mode of the
    distance defaults (:data:`ftdfast.distance.matrix.DEFAULT_CONFIG`: until test accuracy >= 1 - epsilon or
    a plateau, at most ``epochs``). The target's networks in a later search are trained the same way.

    ``cache_dir`` (default: ``cache/`` beside ``out``) keeps the epsilon-networks and Fisher diagonals of the
    distances; point it at a distance experiment's cache to reuse its networks."""
    from .nas.dictionary import build_dictionary
    data, baselines = _paper_task_data(dataset, data_dir, tasks, max_train=max_train, max_test=max_test)
    cache = cache_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "cache")
    log(f"dictionary: FUSE search in the general space for {', '.join(t.task.name for t in baselines)}")
    if epsilon is None:
        config = TrainConfig(epochs=epochs)
    else:
        from .distance.matrix import DEFAULT_CONFIG
        config = replace(DEFAULT_CONFIG, epochs=epochs, epsilon=epsilon)
    d = build_dictionary(baselines, budget=budget, arch=arch, seeds=seeds, config=config,
                         cache_dir=cache, device=device, path=out, progress=progress)
    d.meta.update({"dataset": dataset, "data_dir": data_dir, "tasks": list(tasks), "max_train": max_train,
                   "max_test": max_test})
    d.save(out)
    for e in d.entries:
        log(f"  {e.name}: {e.genotype.num_nodes}-node cell, ops {', '.join(e.genotype.op_set)} "
            f"({e.search_seconds:.0f} s)")
    return d


def run_task_aware_search(dictionary: str, target: str, *, data_dir: Optional[str] = None, budget=None,
                          epochs: int = 3, out: str = "search", hand_designed=("vgg16", "resnet18", "densenet121"),
                          hand_width: float = 1.0, device=None, progress: bool = True, log=print,
                          **compare_options):
    """TA-NAS for ``target`` ("dataset:index") with a dictionary file; the comparison table in ``out``
    (``compare_options``, e.g. ``seed``, ``final_seeds``: passed to :func:`ftdfast.nas.evaluate.compare`)."""
    from .nas.evaluate import compare, to_markdown
    from .nas.dictionary import TaskDictionary
    d = TaskDictionary.load(dictionary)
    name, idx = parse_target(target)
    meta = d.meta
    data_dir = data_dir if data_dir is not None else meta.get("data_dir")
    if name != meta.get("dataset", name):
        log(f"note: the dictionary's baselines come from {meta.get('dataset')}, the target from {name}")
    _, baselines = _paper_task_data(meta.get("dataset", name), data_dir, meta.get("tasks", []),
                                    max_train=meta.get("max_train"), max_test=meta.get("max_test"))
    _, (target_data,) = _paper_task_data(name, data_dir, [idx], max_train=meta.get("max_train"),
                                         max_test=meta.get("max_test"))
    os.makedirs(out, exist_ok=True)
    rows = compare(target_data, d, baselines, budget, epochs=epochs, hand_designed=hand_designed,
                   hand_width=hand_width, device=device, out_dir=out, progress=progress, **compare_options)
    table = to_markdown(rows, title=f"Task-aware search for {target_data.task.name}")
    atomic_write_text(os.path.join(out, "table.md"), table)
    log(table)
    return rows
