"""``DistanceMatrix``: task-to-task distances over seeds, with statistics, tables, files and figures.

Index letters: S seeds, K tasks. ``per_seed[s, a, b]`` is the distance from source task
a (row) to target task b (column) with seed s, as in the paper's tables.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..atomic import atomic_write_text

from .mds import classical_mds

FORMAT = "ftdfast.DistanceMatrix"
FORMAT_VERSION = 1


def _readonly(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


def _nan_to_none(x: np.ndarray) -> list:
    return [None if v != v else float(v) for v in x.reshape(-1)] if x.ndim == 1 else [_nan_to_none(r) for r in x]


class DistanceMatrix:
    """Distances between K tasks for S seeds: rows = sources a, columns = targets b.

    Attributes:
        tasks: the K task names (unique), in row/column order.
        per_seed: (S, K, K) float64, read-only; NaN marks a missing item (not computed,
            or failed).
        mean: (K, K) mean over the seeds present (NaN where none is).
        std: (K, K) sample standard deviation over the seeds present (ddof=1) where a cell
            has two or more; NaN where it has fewer (one seed: the std is not defined, shown as
            "n/a" in tables and null in JSON, never as 0).
        meta: JSON-serializable information (arch, method, seeds, config...). If it holds
            ``"seeds"``, that list has one entry per seed of ``per_seed``.
    """

    def __init__(self, tasks: Sequence[str], per_seed: Any, meta: Optional[Dict[str, Any]] = None):
        tasks = list(tasks)
        for t in tasks:
            if not isinstance(t, str) or not t:
                raise ValueError(f"task names must be non-empty strings, got {t!r}")
        dupes = sorted({t for t in tasks if tasks.count(t) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {dupes}")
        try:
            arr = np.array(per_seed, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"per_seed must be a numeric (S, K, K) array: {exc}") from None
        K = len(tasks)
        if arr.ndim != 3 or arr.shape[1:] != (K, K) or arr.shape[0] < 1:
            raise ValueError(f"per_seed must have shape (S, K, K) = (S, {K}, {K}) with S >= 1 for {K} tasks, "
                             f"got {list(arr.shape)}")
        if np.isinf(arr).any():
            s, a, b = np.argwhere(np.isinf(arr))[0]
            raise ValueError(f"per_seed[{s}] from {tasks[a]!r} to {tasks[b]!r} is infinite; use NaN for missing "
                             "items")
        meta = dict(meta or {})
        if "seeds" in meta:
            seeds = meta["seeds"]
            if not isinstance(seeds, (list, tuple)) or len(seeds) != arr.shape[0]:
                raise ValueError(f"meta['seeds'] must list one seed per matrix of per_seed ({arr.shape[0]}), "
                                 f"got {seeds!r}")
            meta["seeds"] = list(seeds)
        self.tasks: List[str] = tasks
        self.per_seed = _readonly(arr)
        self.meta: Dict[str, Any] = meta
        self.mean, self.std = (_readonly(x) for x in _stats(arr))

    # ------------------------------------------------------------ building
    @classmethod
    def from_per_seed(cls, tasks: Sequence[str], per_seed: Any, meta: Optional[Dict[str, Any]] = None
                      ) -> "DistanceMatrix":
        """From a list of S (K, K) matrices (one per seed), an (S, K, K) array, or a single (K, K) matrix."""
        if isinstance(per_seed, (list, tuple)) and len(per_seed) == 0:
            raise ValueError("per_seed is empty: give at least one (K, K) matrix")
        try:
            arr = np.array(per_seed, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"per_seed must be (K, K) matrices of numbers of one shape, (K, K) = "
                             f"({len(tasks)}, {len(tasks)}) for {len(tasks)} tasks") from None
        if arr.ndim == 2:
            arr = arr[None]
        return cls(tasks, arr, meta)

    # ---------------------------------------------------------------- info
    @property
    def num_seeds(self) -> int:
        return int(self.per_seed.shape[0])

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={self.meta[k]!r}" for k in ("arch", "method") if k in self.meta)
        return f"DistanceMatrix({self.num_tasks} tasks, {self.num_seeds} seeds{extra})"

    def index(self, task: str) -> int:
        """The row/column of ``task``."""
        try:
            return self.tasks.index(task)
        except ValueError:
            raise ValueError(f"unknown task {task!r}; the tasks are {self.tasks}") from None

    def closest(self, target: str) -> "Closest":
        """The source task a != target with the smallest mean distance ``mean[a, target]`` (first on ties),
        with how clearly it wins: a :class:`Closest` (a ``str``, the source's name, carrying the runner-up,
        the gap in units of the pooled std, the per-seed win count and whether the win is separated).

        Sources whose mean is NaN are skipped; a ValueError says when no source is left.
        """
        j = self.index(target)
        col = self.mean[:, j]
        candidates = [i for i in range(self.num_tasks) if i != j and np.isfinite(col[i])]
        if not candidates:
            raise ValueError(f"no source task has a distance to {target!r}" +
                             (" (it is the only task)" if self.num_tasks == 1 else " (all are missing)"))
        order = sorted(candidates, key=lambda i: col[i])
        return Closest.build(self, order, j)

    def closest_table(self) -> Dict[str, Optional["Closest"]]:
        """``{target: closest source}`` for every target (None where no source has a distance)."""
        table: Dict[str, Optional[Closest]] = {}
        for t in self.tasks:
            try:
                table[t] = self.closest(t)
            except ValueError:
                table[t] = None
        return table

    def cell(self, a: int, b: int, precision: int = 3) -> str:
        """``"mean ± std"`` of one cell; ``"mean ± n/a"`` with one seed, ``"n/a"`` where it is missing."""
        m, s = self.mean[a, b], self.std[a, b]
        if not np.isfinite(m):
            return "n/a"
        return f"{m:.{precision}f} ± " + (f"{s:.{precision}f}" if np.isfinite(s) else "n/a")

    def to_markdown(self, precision: int = 3) -> str:
        """A Markdown table with ``mean ± std`` cells; rows = sources, columns = targets.

        In each column the closest source is **bold**; a source whose distance is within noise of it
        (the 95% interval of the per-seed gap includes 0) is marked ``≈`` (a tie). ``n/a``: a missing
        cell, or the std of a single seed. A note under the table says how to read it.
        """
        def esc(name: str) -> str:
            return name.replace("|", "\\|")

        best: Dict[int, int] = {}
        ties: Dict[int, set] = {}
        for j, t in enumerate(self.tasks):
            try:
                c = self.closest(t)
            except ValueError:
                continue
            best[j] = self.index(str(c))
            if self.num_seeds >= 2:  # one seed cannot tell a tie from a win: the note says so instead
                ties[j] = {self.index(n) for n in c.ties}
        header = "| source \\ target | " + " | ".join(esc(t) for t in self.tasks) + " |"
        rule = "|---|" + "---:|" * self.num_tasks
        lines = [header, rule]
        for i, src in enumerate(self.tasks):
            cells = []
            for j in range(self.num_tasks):
                text = self.cell(i, j, precision)
                if best.get(j) == i:
                    text = f"**{text}**"
                elif i in ties.get(j, ()):
                    text = f"≈ {text}"
                cells.append(text)
            lines.append(f"| {esc(src)} | " + " | ".join(cells) + " |")
        lines.append("")
        if self.num_seeds < 2:
            lines.append("Bold: the closest source of each target. One seed: no std, and a win cannot be told "
                         "from a tie (n/a).")
        else:
            lines.append(f"Mean ± std over {self.num_seeds} seeds. Bold: the closest source of each target; "
                         "≈: within noise of it (the 95% interval of the per-seed gap includes 0).")
        return "\n".join(lines)

    def closest_markdown(self, precision: int = 3) -> str:
        """A Markdown table: per target, the closest source, the runner-up, the gap in pooled-std units,
        the per-seed win count and whether the win is separated from noise."""
        lines = ["| target | closest source | distance | runner-up | distance | gap / pooled std | wins | separated |",
                 "|---|---|---:|---|---:|---:|---:|---|"]
        for j, t in enumerate(self.tasks):
            try:
                c = self.closest(t)
            except ValueError:
                continue
            a = self.index(str(c))
            if c.runner_up is None:
                lines.append(f"| {t} | {c} | {self.cell(a, j, precision)} | - | - | - | {c.wins}/{c.seeds} | - |")
                continue
            r = self.index(c.runner_up)
            gap = "n/a" if not np.isfinite(c.gap_in_std) else f"{c.gap_in_std:.2f}"
            sep = {True: "yes", False: "no (tie)", None: "n/a"}[c.separated]
            lines.append(f"| {t} | {c} | {self.cell(a, j, precision)} | {c.runner_up} | {self.cell(r, j, precision)} "
                         f"| {gap} | {c.wins}/{c.seeds} | {sep} |")
        return "\n".join(lines)

    # ----------------------------------------------------------------- I/O
    def to_dict(self) -> Dict[str, Any]:
        """The JSON payload (NaN written as null; ``mean``/``std`` are for readers, recomputed on load)."""
        closest = {}
        for t, c in self.closest_table().items():
            closest[t] = None if c is None else c.to_dict()
        return {"format": FORMAT, "version": FORMAT_VERSION, "tasks": list(self.tasks),
                "per_seed": _nan_to_none(self.per_seed), "mean": _nan_to_none(self.mean),
                "std": _nan_to_none(self.std), "closest": closest, "meta": self.meta}

    def save(self, path: str | os.PathLike) -> None:
        """Write strict JSON atomically: a temporary file in the same folder, fsync, then a rename."""
        path = os.fspath(path)
        try:
            text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot save to {path}: meta must be JSON-serializable without NaN/inf ({exc})") \
                from None
        atomic_write_text(path, text + "\n")

    @classmethod
    def from_dict(cls, payload: Any, source: str = "payload") -> "DistanceMatrix":
        """Rebuild from :meth:`to_dict`'s payload, checking its format, version and shapes."""
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{source} is not a DistanceMatrix file written by ftdfast (no format {FORMAT!r})")
        version = payload.get("version")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"{source} has an invalid format version {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(f"{source} has format version {version}; this ftdfast reads up to {FORMAT_VERSION}: "
                             "upgrade ftdfast")
        missing = [k for k in ("tasks", "per_seed", "meta") if k not in payload]
        if missing:
            raise ValueError(f"{source} lacks the field(s) {missing}")
        tasks, meta = payload["tasks"], payload["meta"]
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"{source}: 'tasks' must be a list of strings")
        if not isinstance(meta, dict):
            raise ValueError(f"{source}: 'meta' must be an object")
        try:
            per_seed = np.array(payload["per_seed"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: 'per_seed' must be S nested K x K lists of numbers or null "
                             f"(K = {len(tasks)} tasks)") from None
        try:
            return cls(tasks, per_seed, meta)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DistanceMatrix":
        """Read a file written by :meth:`save`; a clear ValueError when it is malformed."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no DistanceMatrix file at {path}")
        with open(path, encoding="utf-8") as f:
            try:
                payload = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                                 "the file may be truncated or not a DistanceMatrix file") from None
        return cls.from_dict(payload, source=path)

    # ------------------------------------------------------------- figures
    def plot_heatmaps(self, prefix: str | os.PathLike, precision: int = 2) -> List[str]:
        """Write ``<prefix>_mean.png`` and ``<prefix>_std.png`` (annotated cells); return their paths."""
        from .plots import heatmap

        prefix = os.fspath(prefix)
        what = f"{self.meta['method']} distance" if "method" in self.meta else "distance"
        where = f" ({self.meta['arch']})" if "arch" in self.meta else ""
        return [heatmap(self.mean, self.tasks, f"{what}{where}: mean over {self.num_seeds} seed(s)",
                        prefix + "_mean.png", precision=precision),
                heatmap(self.std, self.tasks, f"{what}{where}: std over {self.num_seeds} seed(s)",
                        prefix + "_std.png", precision=precision)]

    def symmetrized(self) -> np.ndarray:
        """``(mean + mean.T) / 2`` with a zero diagonal (K, K), the input of the atlas.

        Where only one direction of a pair has a distance, that one is used; NaN where neither has.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pairs missing in both directions stay NaN
            sym = np.nanmean(np.stack([self.mean, self.mean.T]), axis=0)
        np.fill_diagonal(sym, 0.0)
        return sym

    def mds_coordinates(self, dim: int = 2) -> np.ndarray:
        """(K, dim) classical-MDS coordinates of :meth:`symmetrized` (see :func:`~ftdfast.distance.classical_mds`).

        Their pairwise Euclidean distances approximate the symmetrized mean distances; the
        first axis carries the most variance.
        """
        sym = self.symmetrized()
        if not np.isfinite(sym).all():
            a, b = np.argwhere(~np.isfinite(sym))[0]
            raise ValueError(f"the atlas needs every pair's distance; {self.tasks[a]!r} - {self.tasks[b]!r} is "
                             "missing in both directions")
        return classical_mds(sym, dim)

    def plot_atlas(self, path: str | os.PathLike) -> str:
        """Write a 2-D scatter of the tasks at their MDS coordinates, labelled; return the path."""
        from .plots import atlas

        coords = self.mds_coordinates(2)
        what = f"{self.meta['method']} distance" if "method" in self.meta else "distance"
        return atlas(coords, self.tasks, f"Task atlas: classical MDS of the symmetrized mean {what}",
                     os.fspath(path))


def _stats(arr: np.ndarray):
    """(mean, std) over axis 0 with NaN skipped: std has ddof=1 for >= 2 values, NaN for fewer (undefined)."""
    count = np.sum(~np.isnan(arr), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(arr, axis=0)
        std = np.nanstd(arr, axis=0, ddof=1) if arr.shape[0] > 1 else np.full(arr.shape[1:], np.nan)
    std = np.where(count < 2, np.nan, std)
    mean = np.where(count == 0, np.nan, mean)
    return np.ascontiguousarray(mean, dtype=np.float64), np.ascontiguousarray(std, dtype=np.float64)


def _t95(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t as student_t
    return float(student_t.ppf(0.975, dof))


class Closest(str):
    """The closest source of one target (the ``str`` is its name) and how clearly it wins.

    Attributes:
        distance, std: its mean distance and std over seeds (std NaN with one seed).
        runner_up: the next closest source (None with a single source), runner_up_distance its mean.
        gap: runner_up_distance - distance (>= 0); pooled_std: sqrt((std^2 + std_runner_up^2) / 2);
        gap_in_std: gap / pooled_std (NaN with one seed; inf for a gap with zero spread).
        wins: the number of seeds in which this source is the closest; seeds: the seeds with a value.
        separated: whether the win is beyond noise: the 95% t-interval of the per-seed (paired) gaps
            lies above 0. None with one seed (not decidable).
        ties: the other sources not separated from the winner by the same test (empty when separated
            from all; with one seed, every other source).
    """

    distance: float
    std: float
    runner_up: Optional[str]
    runner_up_distance: float
    gap: float
    pooled_std: float
    gap_in_std: float
    wins: int
    seeds: int
    separated: Optional[bool]
    ties: List[str]

    @classmethod
    def build(cls, m: "DistanceMatrix", order: List[int], j: int) -> "Closest":
        first = order[0]
        c = cls(m.tasks[first])
        c.distance, c.std = float(m.mean[first, j]), float(m.std[first, j])
        col = m.per_seed[:, :, j]
        present = [s for s in range(m.num_seeds) if np.isfinite(col[s, first])]
        c.seeds = len(present)
        c.wins = 0
        for s in present:
            vals = [(col[s, i], i) for i in order if np.isfinite(col[s, i])]
            if vals and min(vals)[1] == first:
                c.wins += 1
        c.ties = []
        for i in order[1:]:
            if _separated(col[:, first], col[:, i]) is not True:
                c.ties.append(m.tasks[i])
        if len(order) < 2:
            c.runner_up, c.runner_up_distance = None, float("nan")
            c.gap = c.pooled_std = c.gap_in_std = float("nan")
            c.separated = None
            return c
        second = order[1]
        c.runner_up, c.runner_up_distance = m.tasks[second], float(m.mean[second, j])
        c.gap = c.runner_up_distance - c.distance
        c.pooled_std = float(np.sqrt((m.std[first, j] ** 2 + m.std[second, j] ** 2) / 2))
        if not np.isfinite(c.pooled_std):
            c.gap_in_std = float("nan")
        elif c.pooled_std == 0:
            c.gap_in_std = float("inf") if c.gap > 0 else float("nan")
        else:
            c.gap_in_std = c.gap / c.pooled_std
        c.separated = _separated(col[:, first], col[:, second])
        return c

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready (NaN and inf as null)."""
        def num(x):
            return None if x is None or not np.isfinite(x) else float(x)
        return {"source": str(self), "distance": num(self.distance), "std": num(self.std),
                "runner_up": self.runner_up, "runner_up_distance": num(self.runner_up_distance),
                "gap": num(self.gap), "gap_in_pooled_std": num(self.gap_in_std), "wins": self.wins,
                "seeds": self.seeds, "separated": self.separated, "ties": list(self.ties)}


def _separated(winner: np.ndarray, other: np.ndarray) -> Optional[bool]:
    """Is ``other`` (S,) farther than ``winner`` (S,) beyond noise? Paired over the seeds where both exist:
    the 95% t-interval of the mean of (other - winner) lies above 0. None with fewer than two seeds."""
    ok = np.isfinite(winner) & np.isfinite(other)
    diff = (other - winner)[ok]
    if len(diff) < 2:
        return None
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd == 0:
        return bool(mean > 0)
    return bool(mean - _t95(len(diff) - 1) * sd / np.sqrt(len(diff)) > 0)
