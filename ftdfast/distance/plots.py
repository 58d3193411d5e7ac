"""PNG figures of a distance matrix: annotated heatmaps and the MDS task atlas.

matplotlib is imported only here, lazily, and drawn with its Agg canvas directly (no
pyplot, no change of the process-wide backend).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..atomic import atomic_write_with


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib, which is not installed: pip install matplotlib") from exc
    return Figure, FigureCanvasAgg


def _save(fig, path: str) -> str:
    """Write ``fig`` to ``path`` atomically (tmp file in the same folder, fsync, rename)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    atomic_write_with(path, lambda f: fig.savefig(f, format=ext, dpi=120, bbox_inches="tight"))
    return path


def heatmap(values: np.ndarray, tasks: Sequence[str], title: str, path: str, *, precision: int = 2) -> str:
    """An annotated heatmap of ``values`` (K, K): rows = source a, columns = target b."""
    Figure, FigureCanvasAgg = _matplotlib()
    K = len(tasks)
    side = max(4.0, 0.55 * K + 2.5)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(K))
    ax.set_yticks(range(K))
    ax.set_xticklabels(tasks, rotation=45, ha="right")
    ax.set_yticklabels(tasks)
    ax.set_xlabel("target task b")
    ax.set_ylabel("source task a")
    ax.set_title(title)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mid = (lo + hi) / 2
    size = max(5.0, min(10.0, 90.0 / max(K, 1)))
    for i in range(K):
        for j in range(K):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.{precision}f}"
            color = "white" if np.isfinite(v) and v <= mid else "black"  # light text on the dark end
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=size)
    return _save(fig, path)


def atlas(coords: np.ndarray, tasks: Sequence[str], title: str, path: str) -> str:
    """A scatter of the tasks at 2-D ``coords`` (K, 2), each labelled with its name."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(6.0, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(coords[:, 0], coords[:, 1], s=40, color="tab:blue", zorder=2)
    for (x, y), name in zip(coords, tasks):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.15)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("MDS axis 1")
    ax.set_ylabel("MDS axis 2")
    ax.set_title(title)
    return _save(fig, path)
