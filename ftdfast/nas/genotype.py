"""Cell genotypes of the TA-NAS search space: which operation feeds each node from which input.

A cell has ``num_nodes`` (3 or 4) intermediate nodes. Node ``i`` (0-based) takes two inputs chosen from
the cell inputs and the earlier nodes, by *input index*::

    0      -> s0, the output of the cell before the previous one (after preprocessing)
    1      -> s1, the output of the previous cell (after preprocessing)
    2 + j  -> intermediate node j, for j < i

so node ``i`` may use the input indices ``0 .. i + 1``. Each input goes through one operation (a name of
:data:`ALL_OPS`) and the node sums the two results. The two inputs of a node differ (as in DARTS).

One genotype describes the cell used everywhere in the network: normal cells run it at stride 1, reduction
cells run the edges that read a cell input (index 0 or 1) at stride 2 (see :mod:`ftdfast.nas.network`).
The paper searches one cell structure, so there is no separate reduction genotype.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Tuple

#: The ten operations of the paper's search space, in a fixed order (the order of sampling and listings).
ALL_OPS: Tuple[str, ...] = (
    "zero", "identity", "max_pool_3x3", "avg_pool_3x3", "conv_3x3", "conv_5x5", "conv_7x7",
    "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7",
)

#: Node counts a cell may have.
NODE_COUNTS: Tuple[int, ...] = (3, 4)

Edge = Tuple[str, int]                  # (operation name, input index)
Node = Tuple[Edge, Edge]                # the two edges into one node
Topology = Tuple[Tuple[int, int], ...]  # per node, its two input indices in ascending order


def unknown_op_message(name: Any, where: str = "") -> str:
    return (f"unknown operation {name!r}{where}; valid operations are: {', '.join(ALL_OPS)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_topology(topology: Any) -> Topology:
    """Check per-node input pairs (3 or 4 nodes, 2 distinct earlier inputs each); return them sorted."""
    if not isinstance(topology, (list, tuple)):
        raise ValueError(f"a topology is a list of input-index pairs, one per node; got {type(topology).__name__}")
    if len(topology) not in NODE_COUNTS:
        raise ValueError(f"a cell has 3 or 4 nodes; the topology has {len(topology)}")
    out = []
    for i, pair in enumerate(topology):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_int(j) for j in pair):
            raise ValueError(f"node {i} of the topology must be a pair of input indices, got {pair!r}")
        for j in pair:
            _check_input(i, j)
        if pair[0] == pair[1]:
            raise ValueError(f"node {i} takes input {pair[0]} twice; the two inputs of a node must differ")
        out.append(tuple(sorted(pair)))
    return tuple(out)


def _check_input(i: int, j: int) -> None:
    if j < 0 or j > i + 1:
        raise ValueError(
            f"node {i} has input index {j}: node {i} may read 0..{i + 1} "
            f"(0 = s0, 1 = s1, 2 + k = node k for k < {i}); an index may not refer to the node itself or a later node")


@dataclass(frozen=True)
class Genotype:
    """One cell: ``edges[i] = ((op_a, input_a), (op_b, input_b))`` for node ``i``; see the module docstring.

    Lists are accepted and stored as tuples; every field is validated on construction (``ValueError``).

    >>> g = Genotype(3, ((("conv_3x3", 0), ("identity", 1)),
    ...                  (("max_pool_3x3", 1), ("conv_5x5", 2)),
    ...                  (("zero", 0), ("dil_conv_3x3", 3))))
    >>> Genotype.from_json(g.to_json()) == g
    True
    """
    num_nodes: int
    edges: Tuple[Node, ...]

    def __post_init__(self) -> None:
        if not _is_int(self.num_nodes) or self.num_nodes not in NODE_COUNTS:
            raise ValueError(f"num_nodes must be 3 or 4, got {self.num_nodes!r}")
        if not isinstance(self.edges, (list, tuple)):
            raise ValueError(f"edges must be a list of nodes, got {type(self.edges).__name__}")
        if len(self.edges) != self.num_nodes:
            raise ValueError(f"num_nodes is {self.num_nodes} but edges describe {len(self.edges)} nodes")
        nodes = []
        for i, node in enumerate(self.edges):
            if not isinstance(node, (list, tuple)) or len(node) != 2:
                raise ValueError(f"node {i} must have exactly 2 edges (op, input), got {node!r}")
            edges = []
            for edge in node:
                if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                    raise ValueError(f"an edge of node {i} must be a pair (op_name, input_index), got {edge!r}")
                op, j = edge
                if not isinstance(op, str) or op not in ALL_OPS:
                    raise ValueError(unknown_op_message(op, f" at node {i}"))
                if not _is_int(j):
                    raise ValueError(f"node {i}: the input index must be an int, got {j!r}")
                _check_input(i, j)
                edges.append((op, j))
            if edges[0][1] == edges[1][1]:
                raise ValueError(f"node {i} takes input {edges[0][1]} twice; the two inputs of a node must differ")
            nodes.append(tuple(edges))
        object.__setattr__(self, "edges", tuple(nodes))

    # ------------------------------------------------------------------ views
    @property
    def topology(self) -> Topology:
        """Per node, its two input indices in ascending order (the cell's wiring without the operations)."""
        return tuple(tuple(sorted((a[1], b[1]))) for a, b in self.edges)

    @property
    def ops(self) -> Tuple[str, ...]:
        """The 2 * num_nodes operation names in node order."""
        return tuple(op for node in self.edges for op, _ in node)

    @property
    def op_set(self) -> Tuple[str, ...]:
        """The distinct operations the cell uses, in :data:`ALL_OPS` order."""
        used = set(self.ops)
        return tuple(op for op in ALL_OPS if op in used)

    def __str__(self) -> str:
        nodes = " | ".join(" + ".join(f"{op}({j})" for op, j in node) for node in self.edges)
        return f"Genotype[{self.num_nodes}: {nodes}]"

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> Dict[str, Any]:
        return {"num_nodes": self.num_nodes, "edges": [[[op, j] for op, j in node] for node in self.edges]}

    @classmethod
    def from_dict(cls, d: Any) -> "Genotype":
        if not isinstance(d, dict):
            raise ValueError(f"malformed genotype: expected an object with 'num_nodes' and 'edges', "
                             f"got {type(d).__name__}")
        missing = [k for k in ("num_nodes", "edges") if k not in d]
        extra = sorted(set(d) - {"num_nodes", "edges"})
        if missing or extra:
            raise ValueError(f"malformed genotype: missing keys {missing}, unexpected keys {extra}; "
                             f"expected exactly 'num_nodes' and 'edges'")
        return cls(d["num_nodes"], d["edges"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            d = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed genotype JSON: {e}") from None
        return cls.from_dict(d)


def as_genotype(g: Any) -> Genotype:
    """A Genotype from a Genotype, a dict (``to_dict`` form) or a JSON string."""
    if isinstance(g, Genotype):
        return g
    if isinstance(g, str):
        return Genotype.from_json(g)
    if isinstance(g, dict):
        return Genotype.from_dict(g)
    raise TypeError(f"expected a Genotype, dict or JSON string, got {type(g).__name__}")


def uniform_genotype(op: str, num_nodes: int = 4, inputs: Iterable[Tuple[int, int]] = None) -> Genotype:
    """A cell whose edges all use ``op``; wiring ``inputs`` (default: node i reads i and i + 1)."""
    pairs = list(inputs) if inputs is not None else [(i, i + 1) for i in range(num_nodes)]
    return Genotype(num_nodes, tuple(((op, a), (op, b)) for a, b in pairs))
