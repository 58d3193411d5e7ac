"""The task-distance matrix over a task set (the paper's Algorithm 1, for every pair and seed).

For every seed s and task k, an epsilon-approximation network N_k^s is trained on k's training
data (one *training item*). For every target b and source a, the Fisher diagonal of N_a^s on b's
TEST data is computed (one *Fisher item*; F_bb with a = b). Then

    d_s[a, b] = (1/sqrt 2) * || sqrt(F_ab / tr F_ab) - sqrt(F_bb / tr F_bb) ||_2

(or the cosine baseline / the authors' legacy quantity). Rows are sources, columns targets.

Every item is stored in the on-disk cache as soon as it is done (atomic writes), so an
interrupted run, even a ``kill -9``, loses at most the item in flight, and a rerun resumes.
Under an initialized ``torch.distributed`` process group the items are spread over the ranks
(the shared cache is the meeting point) and rank 0 assembles the matrix.

Which Fisher (``fisher``; the labels fed to N_a when it is evaluated on task b's data):

- ``"exact"`` (default): label-free: the expectation over labels drawn from N_a's own predictive
  distribution (cross-entropy), the Gauss-Newton diagonal for MSE. It depends only on N_a and b's
  inputs, so the arbitrary correspondence between task a's output indices and task b's labels plays no
  part. Chosen by the ablation in ``docs/paper/REPORT.md`` (same closest source across seeds,
  architectures and head policies, where the empirical Fisher flips with the head policy).
- ``"empirical"``: b's integer labels fed into N_a's output indices (the paper's formula, read literally).
- ``"mc"``: ``mc_samples`` labels per sample drawn from N_a (seeded per item from ``mc_seed``).

Every result's ``meta["fisher_labels"]`` says which labels were fed to which network.

Epsilon-approximation networks: by default (:data:`DEFAULT_CONFIG`) each network trains until its test
accuracy reaches 1 - epsilon (epsilon = 0.02), at most 20 epochs, stopping early on a plateau; a network
that misses epsilon is reported by name (a warning, or a RuntimeError with ``strict=True``), and
``meta["networks"]`` records each one's accuracy, epochs and stop reason.

Output width (``head``):

- ``"shared"`` (default): every network gets the same number of outputs, the largest class
  count in the task set, so every Fisher has the same shape and task b's labels are valid
  outputs of N_a. Unused outputs of a smaller task simply learn to stay low.
- ``"legacy"``: the authors' code: each network has its own task's class count; to evaluate
  N_a on b's labels its logits are zero-padded to b's width, and the Fisher head rows of the
  smaller network are zero-padded before the distance.
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..native import ops
from ..cache import Cache
from ..fisher import fisher_diagonal
from ..fisher.losses import FISHER_KINDS
from ..progress import progress_bar
from ..train import TrainConfig, check_data, epsilon_miss_message, get_trained, network_options
from .inputs import checked_total
from .measures import DEFAULT_MEASURE, get_measure
from .padding import pad_to_common
from .result import DistanceMatrix
from .task import DEFAULT_FISHER

HEADS = ("shared", "legacy")
FISHER_DATA = ("test", "validation")
#: The epsilon-approximation networks of :func:`distance_matrix` unless ``config`` says otherwise.
DEFAULT_CONFIG = TrainConfig(epochs=20, epsilon=0.02, until_epsilon=True, patience=3)
# fisher_diagonal options that change the result (besides fisher, backend, batch_size for the legacy
# backend, and the MC generator, which the key names explicitly)
_FISHER_KEY_OPTIONS = ("max_samples", "mc_samples", "dtype")
_EXACT_MSE_WARN = 256  # output elements per sample above which the exact MSE Fisher's cost is worth a warning


class PaddedLogits(nn.Module):
    """``net`` with its logits zero-padded to ``width`` outputs (the authors' legacy head policy).

    x (n, ...) -> (n, width): ``net(x)`` (n, k) followed by ``width - k`` zeros.
    """

    def __init__(self, net: nn.Module, width: int):
        super().__init__()
        self.net = net
        self.width = int(width)

    def forward(self, x):
        z = self.net(x)
        return F.pad(z, (0, self.width - z.shape[-1])) if z.shape[-1] < self.width else z


@dataclass(frozen=True)
class _Item:
    """One unit of work: a training (task, seed) or a Fisher pass (source net, target data, seed)."""
    kind: str            # "train" | "fisher"
    seed: int
    task: int            # the trained task (train) or the source a (fisher)
    target: int = -1     # the target b (fisher)


def _check_inputs(tasks, arch, seeds, method, head) -> List[int]:
    if not tasks:
        raise ValueError("distance_matrix: the task list is empty; give at least two TaskData "
                         "(e.g. [t.build(data) for t in ftdfast.tasks.paper_tasks('mnist', data)])")
    for k, t in enumerate(tasks):
        missing = [a for a in ("x_train", "y_train", "x_test", "y_test", "loss", "fingerprint") if not hasattr(t, a)]
        if missing:
            raise TypeError(f"distance_matrix: tasks[{k}] is a {type(t).__name__}, not a TaskData (lacks "
                            f"{', '.join(missing)}); build it first: task.build(data, seed)")
    names = [_task_name(t) for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"distance_matrix: task names must be unique; repeated: {dupes}")
    shapes = {tuple(t.x_test.shape[1:]) for t in tasks}
    if len(shapes) > 1:
        raise ValueError(f"distance_matrix: all tasks need the same input shape to share one architecture; "
                         f"got {sorted(shapes)}")
    losses = {t.loss for t in tasks}
    if len(losses) > 1:
        raise ValueError(f"distance_matrix: tasks mix losses {sorted(losses)}; a matrix needs one kind of task")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"distance_matrix: arch must be a model name such as 'small_cnn', got {arch!r}")
    get_measure(method)  # an unknown name raises here, before any training
    if head not in HEADS:
        raise ValueError(f"distance_matrix: head must be one of {HEADS}, got {head!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"distance_matrix: seeds must be >= 1 (a count) or a list of seeds, got {seeds}")
        seeds = list(range(seeds))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"distance_matrix: seeds must be a non-empty list of distinct ints, got {seeds}")
    for k, t in enumerate(tasks):
        if len(t.y_test) == 0:
            raise ValueError(f"distance_matrix: task {names[k]!r} has no test samples; the Fisher needs them")
    return seeds


def _task_name(t) -> str:
    task = getattr(t, "task", None)
    return str(getattr(task, "name", None) or getattr(t, "name", None) or repr(task))


def distance_matrix(tasks: Sequence, arch: str, seeds=3, *, config: Optional[TrainConfig] = None,
                    epochs: Optional[int] = None, cache_dir: Optional[str] = None, device=None,
                    method: str = DEFAULT_MEASURE, head: str = "shared", fisher: str = DEFAULT_FISHER, fisher_data: str = "test",
                    mc_seed: int = 0, strict: bool = False, targets: Optional[Sequence[int]] = None,
                    progress: bool = True, **fisher_options) -> DistanceMatrix:
    """The K x K task-distance matrix of ``tasks`` for one architecture, over seeds.

    Args:
        tasks: K ``TaskData`` (``Task.build(data, seed)``), sharing one input shape and loss.
        arch: a name from ``ftdfast.models.ARCHS`` (e.g. ``"small_cnn"``, ``"resnet18"``).
        seeds: a count S (seeds 0..S-1) or a list of seeds; seed s trains every N_k^s. Use S >= 3:
            with one seed the std is not defined ("n/a") and no tie can be told from a win.
        config: training settings (``TrainConfig``); default :data:`DEFAULT_CONFIG` (epsilon mode:
            train to test accuracy >= 0.98, at most 20 epochs). ``epochs`` overrides its epoch count.
        cache_dir: where trained networks and Fisher diagonals are kept (resumable); None keeps
            nothing on disk. Every option that changes an item is in its key.
        device: where to train and compute the Fisher (default: CPU).
        method: a name in :data:`~ftdfast.distance.MEASURES`: ``"fisher"`` (the paper's distance), ``"cosine"`` (1 - cosine of the raw
            diagonals, the paper's baseline) or ``"legacy"`` (the authors' code: the square of the
            distance).
        head: ``"shared"`` or ``"legacy"`` output width (see the module docstring).
        fisher: ``"exact"`` (label-free, default), ``"empirical"`` or ``"mc"`` (see the module docstring).
        fisher_data: the split of task b the Fishers are computed on: ``"test"`` (default, as in the
            paper) or ``"validation"`` (the held-out part of b's training split; needs
            ``config.validation > 0``).
        mc_seed: seeds the labels drawn for ``fisher="mc"`` (each item gets its own generator derived from
            mc_seed, the seed and the pair); a ``generator=`` given instead is used the same way, through
            a digest of its state.
        strict: a network that misses 1 - epsilon raises RuntimeError (default: a warning naming it).
        targets: indices of the columns to compute (default: all); the other columns stay NaN.
            Task-aware NAS asks for one column: every baseline's distance to a new target.
        fisher_options: passed to ``fisher_diagonal`` (``backend``, ``batch_size``,
            ``max_samples``, ``mc_samples``, ...); the loss is the tasks' own.

    Returns:
        ``DistanceMatrix`` with ``per_seed`` (S, K, K), ``mean``/``std`` (K, K), rows = sources a,
        columns = targets b, and ``meta`` (arch, seeds, method, head, fisher, fisher_labels, networks
        (accuracy, epochs, stop reason of each), seconds (train, fisher, distance: this call's wall time),
        cost_seconds (train, fisher: what the items took when computed, this call or an earlier one from
        the cache; fisher None when an entry predates the record)).
    """
    seeds = _check_inputs(tasks, arch, seeds, method, head)
    config = config or DEFAULT_CONFIG
    if epochs is not None:
        config = TrainConfig(**{**config.to_dict(), "epochs": int(epochs)})
    if "loss" in fisher_options:
        raise ValueError("distance_matrix: the loss comes from the tasks (TaskData.loss); do not pass loss=")
    if fisher not in FISHER_KINDS:
        raise ValueError(f"distance_matrix: fisher must be one of {FISHER_KINDS}, got {fisher!r}")
    if fisher_data not in FISHER_DATA:
        raise ValueError(f"distance_matrix: fisher_data must be one of {FISHER_DATA}, got {fisher_data!r}")
    if fisher_data == "validation" and config.validation <= 0:
        raise ValueError("distance_matrix: fisher_data='validation' needs a held-out split: pass a config with "
                         "validation > 0, e.g. TrainConfig(..., validation=0.1)")
    if fisher == "exact" and tasks[0].loss == "mse":
        D = int(tasks[0].y_test[0].numel())
        if D > _EXACT_MSE_WARN:
            warnings.warn(f"distance_matrix: fisher='exact' on MSE tasks (the Gauss-Newton diagonal) takes one "
                          f"backward per output element: {D} per batch here. fisher='mc' with mc_samples=k "
                          "estimates it without bias at k backwards", RuntimeWarning, stacklevel=2)
    generator = fisher_options.pop("generator", None)
    mc_source = _mc_source(generator, mc_seed)
    fisher_options.setdefault("progress", False)
    # the matrix is parallel over its items: each Fisher pass runs whole on the rank that owns it
    fisher_options.setdefault("distributed", False)
    cache = Cache(cache_dir) if cache_dir is not None else None
    names = [_task_name(t) for t in tasks]
    K = len(tasks)
    classification = tasks[0].loss != "mse"
    widths = [int(t.num_classes) for t in tasks] if classification else [None] * K
    shared_width = max(widths) if classification else None
    columns = list(range(K)) if targets is None else sorted({int(b) for b in targets})
    if not columns or not all(0 <= b < K for b in columns):
        raise ValueError(f"distance_matrix: targets must be a non-empty list of task indices in 0..{K - 1}, "
                         f"got {targets!r}")
    run = _MatrixRun(tasks, arch, config, cache, device, head, shared_width, fisher, fisher_data, mc_source,
               fisher_options, progress)

    from .. import distributed as dist_util  # lazy: torch.distributed is imported only when used
    rank, world = dist_util.world()
    train_items = [_Item("train", s, k) for s in seeds for k in range(K)]
    fisher_items = [_Item("fisher", s, a, b) for s in seeds for b in columns for a in range(K)]
    if world > 1:
        if cache is None:
            raise ValueError("distance_matrix: a distributed run needs cache_dir, a folder every rank can read: "
                             "the ranks meet there")
        # each (task, seed) training, then each (source net, target data) Fisher pass, runs on one rank and
        # lands in the shared cache; after each phase every rank has finished, and all assemble from the cache
        for phase, what in ((train_items, "train"), (fisher_items, "fisher")):
            dist_util.run_items(phase, run.do_item, progress=progress, desc=f"rank {rank} {what}")
    for s in seeds:  # every network first: a missed epsilon is reported before any Fisher work
        for k in range(K):
            run.net(s, k)
    misses = run.epsilon_misses(seeds)
    if misses:
        text = (f"distance_matrix: {len(misses)} network(s) missed 1 - epsilon = {1 - config.epsilon:.4f}:\n  "
                + "\n  ".join(misses))
        if strict:
            raise RuntimeError(text + "\n(strict=True; train longer, tune lr, or allow a larger epsilon)")
        warnings.warn(text, RuntimeWarning, stacklevel=2)
    per_seed = np.full((len(seeds), K, K), np.nan)
    with progress_bar(total=len(fisher_items), enabled=progress and rank == 0, desc=f"distance {arch}",
                      unit="pair") as bar:
        for i, s in enumerate(seeds):
            for b in columns:
                F_bb = run.fisher(s, b, b)
                F_col = [F_bb if a == b else run.fisher(s, a, b) for a in range(K)]
                t0 = time.perf_counter()
                per_seed[i, :, b] = _column(method, head, F_col, b)
                run.seconds["distance"] += time.perf_counter() - t0
                bar.update(K)
    meta = {"arch": arch, "method": method, "head": head, "fisher": fisher, "fisher_data": fisher_data,
            "seeds": seeds, "loss": tasks[0].loss,
            "num_outputs": shared_width if head == "shared" else widths, "config": config.to_dict(),
            "fisher_options": {k: str(v) for k, v in fisher_options.items() if k not in ("progress", "distributed")},
            "fisher_labels": _labels_fed(tasks, names, columns, fisher, fisher_data, mc_source,
                                         fisher_options.get("mc_samples", 1)),
            "fingerprints": [t.fingerprint() for t in tasks], "world_size": world, "targets": columns,
            "test_accuracy": run.accuracies(seeds), "networks": run.network_records(seeds),
            "epsilon_misses": misses, "seconds": dict(run.seconds),
            "cost_seconds": {"train": sum(r["train_seconds"] for r in run.network_records(seeds)),
                             "fisher": run.cost["fisher"]}}
    return DistanceMatrix.from_per_seed(names, per_seed, meta)


def _mc_source(generator: Optional[torch.Generator], mc_seed: int) -> str:
    """A stable name of where the MC labels come from: ``mc_seed`` or a digest of a generator's state."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"distance_matrix: generator must be a torch.Generator, got {type(generator).__name__}")
        return "generator:" + hashlib.sha256(generator.get_state().numpy().tobytes()).hexdigest()[:16]
    if isinstance(mc_seed, bool) or not isinstance(mc_seed, (int, np.integer)):
        raise ValueError(f"distance_matrix: mc_seed must be an int, got {mc_seed!r}")
    return f"seed:{int(mc_seed)}"


def _item_generator(mc_source: str, seed: int, a: int, b: int) -> torch.Generator:
    """The MC labels' generator of one item: a function of the source and the item alone (resumable)."""
    digest = hashlib.sha256(f"{mc_source}|{seed}|{a}|{b}".encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:15], 16))


def _labels_fed(tasks, names, columns, fisher, fisher_data, mc_source, mc_samples) -> Dict[str, object]:
    """Which labels each network N_a received on task b's data (JSON-ready)."""
    if fisher == "exact":
        rule = (f"none: label-free, the expectation over labels from N_a's own predictive distribution on "
                f"b's {fisher_data} inputs" + (" (Gauss-Newton diagonal)" if tasks[0].loss == "mse" else ""))
    elif fisher == "mc":
        rule = f"{mc_samples} label(s) per sample drawn from N_a's predictive distribution ({mc_source})"
    else:
        rule = f"task b's {fisher_data} labels, fed into N_a's output indices as they are"
    pairs = []
    for b in columns:
        for a in range(len(tasks)):
            if fisher == "empirical":
                k = getattr(tasks[b], "num_classes", None)
                labels = f"{names[b]} labels" + (f" 0..{k - 1}" if k else " (regression targets)")
            else:
                labels = "none" if fisher == "exact" else "sampled from the network"
            pairs.append({"network": names[a], "data": names[b], "labels": labels})
    return {"fisher": fisher, "rule": rule, "pairs": pairs}


def _column(method: str, head: str, F_col: List[Dict[str, torch.Tensor]], b: int) -> np.ndarray:
    """d[a, b] for every source a of target b, from F_col[a] = F_ab (F_col[b] = F_bb).

    The Fisher distance uses the native ``fisher_distance_matrix`` op: rows F_ab, one column F_bb,
    each scaled by its own trace first; d[b, b] = 0 exactly.
    """
    K = len(F_col)
    F_bb = F_col[b]
    out = np.zeros(K)
    if method != "fisher":
        for a in range(K):
            if a != b:
                F_ab, F_bb_a = pad_to_common(F_col[a], F_bb) if head == "legacy" else (F_col[a], F_bb)
                out[a] = get_measure(method)(F_ab, F_bb_a)
        return out
    groups: Dict[int, Tuple[List[int], List[torch.Tensor], torch.Tensor]] = {}
    for a in range(K):
        if a == b:
            continue
        F_ab, F_bb_a = pad_to_common(F_col[a], F_bb) if head == "legacy" else (F_col[a], F_bb)
        row, col = _unit_trace(F_ab, "F_ab"), _unit_trace(F_bb_a, "F_bb")
        idx, rows, _ = groups.setdefault(row.numel(), ([], [], col))
        idx.append(a)
        rows.append(row)
    for idx, rows, col in groups.values():
        with torch.no_grad():
            d = ops.fisher_distance_matrix(torch.stack(rows), col[None])
        out[idx] = d[:, 0].double().numpy()
    return out


def _unit_trace(F: Dict[str, torch.Tensor], arg: str) -> torch.Tensor:
    """The Fisher flattened to (P,) float64 and divided by its trace (after the checks of the measures)."""
    names = list(F)
    tensors = [F[n] for n in names]
    trace = checked_total(names, tensors, arg)
    return torch.cat([t.reshape(-1).double() for t in tensors]) / trace


class _MatrixRun:
    """The networks and Fisher diagonals of one matrix: computed once, cached in memory and on disk."""

    def __init__(self, tasks, arch, config, cache, device, head, shared_width, fisher, fisher_data, mc_source,
                 fisher_options, progress):
        self.tasks, self.arch, self.config, self.cache = tasks, arch, config, cache
        self.device, self.head, self.shared_width = device, head, shared_width
        self.fisher_kind, self.fisher_data, self.mc_source = fisher, fisher_data, mc_source
        self.fisher_options, self.progress = fisher_options, progress
        self.nets: Dict[Tuple[int, int], Tuple[nn.Module, object]] = {}
        self.fishers: Dict[Tuple[int, int, int], Dict[str, torch.Tensor]] = {}
        self.seconds = {"train": 0.0, "fisher": 0.0, "distance": 0.0}
        # what the items cost when they were computed, whether now or in an earlier run (cache); None: unknown
        self.cost: Dict[str, Optional[float]] = {"fisher": 0.0}

    # ---------------------------------------------------------------- items
    def do_item(self, it: _Item) -> None:
        if it.kind == "train":
            self.net(it.seed, it.task)
        else:
            self.fisher(it.seed, it.task, it.target)

    def net(self, seed: int, k: int):
        if (seed, k) not in self.nets:
            t0 = time.perf_counter()
            width = self.shared_width if self.head == "shared" else None
            with warnings.catch_warnings():
                # a missed epsilon is reported once for the whole matrix, by name (distance_matrix)
                warnings.filterwarnings("ignore", message="ftdfast: the network for task")
                self.nets[(seed, k)] = get_trained(self.cache, self.tasks[k], self.arch, seed, self.config,
                                                   num_outputs=width, device=self.device, progress=False)
            self.seconds["train"] += time.perf_counter() - t0
        return self.nets[(seed, k)][0]

    def fisher_key(self, seed: int, a: int, b: int) -> str:
        """The cache key of F_ab: every option that changes it."""
        opts = self.fisher_options
        backend = str(opts.get("backend", "auto"))
        options = {k: str(opts[k]) for k in _FISHER_KEY_OPTIONS if k in opts}
        if backend == "legacy":  # the square of each batch-mean gradient: depends on the batch size
            options["batch_size"] = str(opts.get("batch_size", 128))
        return self.cache.key(item="fisher", arch=self.arch, seed=seed, head=self.head,
                              source=self.tasks[a].fingerprint(), target=self.tasks[b].fingerprint(),
                              config=network_options(self.config), width=self.shared_width, fisher=self.fisher_kind,
                              backend=backend, split=self.fisher_data,
                              mc=self.mc_source if self.fisher_kind == "mc" else None, options=options)

    def fisher(self, seed: int, a: int, b: int) -> Dict[str, torch.Tensor]:
        """F_ab for seed: network N_a^seed on task b's Fisher split, as {name: tensor} (CPU)."""
        if (seed, a, b) in self.fishers:
            return self.fishers[(seed, a, b)]
        key = None
        if self.cache is not None:
            key = self.fisher_key(seed, a, b)
            hit = self.cache.load("fisher", key, with_meta=True)
            if hit is not None:
                found, meta = hit
                spent = (meta or {}).get("seconds")
                self.cost["fisher"] = None if spent is None or self.cost["fisher"] is None \
                    else self.cost["fisher"] + float(spent)
                self.fishers[(seed, a, b)] = found
                return found
        net = self.net(seed, a)
        t0 = time.perf_counter()
        target = self.tasks[b]
        model = net
        if self.head == "legacy" and target.loss != "mse":
            model = PaddedLogits(net, max(int(target.num_classes), _out_width(net)))
        x, y = (target.x_test, target.y_test) if self.fisher_data == "test" else check_data(target, self.config)
        options = dict(self.fisher_options)
        if self.fisher_kind == "mc":
            options["generator"] = _item_generator(self.mc_source, seed, a, b)
        result = fisher_diagonal(model, (x, y), loss=target.loss, fisher=self.fisher_kind, device=self.device,
                                 **options)
        prefix = "net." if model is not net else ""
        found = {k[len(prefix):]: v.detach().cpu() for k, v in result.items()}
        spent = time.perf_counter() - t0
        self.seconds["fisher"] += spent
        if self.cost["fisher"] is not None:
            self.cost["fisher"] += spent
        if self.cache is not None:
            self.cache.save("fisher", key, found, meta={"seed": seed, "source": a, "target": b,
                                                        "num_samples": result.num_samples,
                                                        "fisher": self.fisher_kind, "seconds": spent})
        self.fishers[(seed, a, b)] = found
        return found

    def _result(self, seed: int, k: int):
        return self.nets.get((seed, k), (None, None))[1]

    def accuracies(self, seeds) -> Dict[str, List[Optional[float]]]:
        out = {}
        for k, t in enumerate(self.tasks):
            accs = []
            for s in seeds:
                acc = getattr(self._result(s, k), "test_accuracy", None)
                accs.append(None if acc is None or (isinstance(acc, float) and math.isnan(acc)) else float(acc))
            out[_task_name(t)] = accs
        return out

    def network_records(self, seeds) -> List[Dict[str, object]]:
        """One record per network: task, seed, test and check accuracy, epochs, stop reason, epsilon met."""
        records = []
        for s in seeds:
            for k, t in enumerate(self.tasks):
                r = self._result(s, k)
                if r is None:
                    continue
                records.append({"task": _task_name(t), "seed": s, "test_accuracy": r.test_accuracy,
                                "check_accuracy": r.check_accuracy, "check_split": self.config.check_split,
                                "epochs": r.epochs_run, "stop_reason": r.stop_reason, "epsilon_ok": r.epsilon_ok,
                                "train_seconds": r.seconds, "from_cache": r.from_cache})
        return records

    def epsilon_misses(self, seeds) -> List[str]:
        """``"task (seed s): <why>"`` for every network that missed 1 - epsilon."""
        out = []
        for s in seeds:
            for k, t in enumerate(self.tasks):
                r = self._result(s, k)
                if r is not None and r.epsilon_ok is False:
                    out.append(f"{_task_name(t)} (seed {s}): " + epsilon_miss_message(r, self.config, _task_name(t))
                               .split(": ", 1)[1])
        return out


def _out_width(net: nn.Module) -> int:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 0
