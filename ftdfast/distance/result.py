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
            has two or more; 0 where it has exactly one (in particular whenever S == 1);
            NaN where it has none.
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

    @classmethod
    def combine(cls, matrices: Sequence["DistanceMatrix"], meta: Optional[Dict[str, Any]] = None
                ) -> "DistanceMatrix":
        """One matrix with the seeds of all ``matrices`` (same tasks, same order), stacked in order.

        ``meta`` defaults to the first matrix's, with ``seeds`` concatenated when every matrix
        records its seeds (a seed present twice is an error). Matrices whose ``arch``,
        ``method`` or ``head`` differ are not combined.
        """
        matrices = list(matrices)
        if not matrices:
            raise ValueError("combine needs at least one DistanceMatrix")
        first = matrices[0]
        for m in matrices[1:]:
            if m.tasks != first.tasks:
                raise ValueError(f"cannot combine matrices over different tasks: {first.tasks} and {m.tasks}")
            for key in ("arch", "method", "head"):
                if first.meta.get(key) != m.meta.get(key):
                    raise ValueError(f"cannot combine matrices with different meta[{key!r}]: "
                                     f"{first.meta.get(key)!r} and {m.meta.get(key)!r}")
        if meta is None:
            meta = dict(first.meta)
            if all("seeds" in m.meta for m in matrices):
                seeds = [s for m in matrices for s in m.meta["seeds"]]
                repeated = sorted({repr(s) for s in seeds if seeds.count(s) > 1})
                if repeated:
                    raise ValueError(f"seed(s) {', '.join(repeated)} appear in more than one matrix")
                meta["seeds"] = seeds
            else:
                meta.pop("seeds", None)
        return cls(first.tasks, np.concatenate([m.per_seed for m in matrices]), meta)

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

    def closest(self, target: str) -> str:
        """The source task a != target with the smallest mean distance ``mean[a, target]`` (first on ties).

        Sources whose mean is NaN are skipped; a ValueError says when no source is left.
        """
        j = self.index(target)
        col = self.mean[:, j]
        candidates = [i for i in range(self.num_tasks) if i != j and np.isfinite(col[i])]
        if not candidates:
            raise ValueError(f"no source task has a distance to {target!r}" +
                             (" (it is the only task)" if self.num_tasks == 1 else " (all are missing)"))
        return self.tasks[min(candidates, key=lambda i: col[i])]

    def closest_table(self) -> Dict[str, Optional[str]]:
        """``{target: closest source}`` for every target (None where no source has a distance)."""
        table: Dict[str, Optional[str]] = {}
        for t in self.tasks:
            try:
                table[t] = self.closest(t)
            except ValueError:
                table[t] = None
        return table

    def to_markdown(self, precision: int = 3) -> str:
        """A Markdown table with ``mean ± std`` cells (``n/a`` where missing); rows = sources, columns = targets."""
        def esc(name: str) -> str:
            return name.replace("|", "\\|")

        header = "| source \\ target | " + " | ".join(esc(t) for t in self.tasks) + " |"
        rule = "|---|" + "---:|" * self.num_tasks
        lines = [header, rule]
        for i, src in enumerate(self.tasks):
            cells = []
            for j in range(self.num_tasks):
                m, s = self.mean[i, j], self.std[i, j]
                cells.append("n/a" if not np.isfinite(m) else f"{m:.{precision}f} ± {s:.{precision}f}")
            lines.append(f"| {esc(src)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    # ----------------------------------------------------------------- I/O
    def to_dict(self) -> Dict[str, Any]:
        """The JSON payload (NaN written as null; ``mean``/``std`` are for readers, recomputed on load)."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "tasks": list(self.tasks),
                "per_seed": _nan_to_none(self.per_seed), "mean": _nan_to_none(self.mean),
                "std": _nan_to_none(self.std), "meta": self.meta}

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
    """(mean, std) over axis 0 with NaN skipped: std has ddof=1 for >= 2 values, 0 for one, NaN for none."""
    count = np.sum(~np.isnan(arr), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(arr, axis=0)
        std = np.nanstd(arr, axis=0, ddof=1) if arr.shape[0] > 1 else np.zeros(arr.shape[1:])
    std = np.where(count == 1, 0.0, std)
    std = np.where(count == 0, np.nan, std)
    mean = np.where(count == 0, np.nan, mean)
    return np.ascontiguousarray(mean, dtype=np.float64), np.ascontiguousarray(std, dtype=np.float64)
