"""The TA-NAS search space: which cell genotypes may be sampled, and its task-aware restriction.

A :class:`SearchSpace` is ``node_counts`` (a subset of {3, 4}), ``ops`` (a subset of the ten operations) and an
optional fixed ``topology`` (per node, its two input indices). Without a topology, node ``i`` may read any two
distinct inputs among ``0 .. i + 1`` (see :mod:`ftdfast.nas.genotype`). Genotypes are counted and sampled in
canonical form (each node's edges ordered by input index), so the number of genotypes is

    size = sum over n in node_counts of  prod_{i < n} C(i + 2, 2) * |ops|^2      (free wiring)
    size = |ops|^(2 n)                                                           (fixed topology of n nodes)

:meth:`SearchSpace.restrict_to` gives the paper's task-aware restriction: the cell topology of a baseline
genotype, with only the operations that genotype uses.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch

from .genotype import ALL_OPS, NODE_COUNTS, Genotype, Topology, as_genotype, unknown_op_message, validate_topology

SeedLike = Union[int, torch.Generator, random.Random, None]


def sample_many(space, k: int, seed: SeedLike = None, *, unique: bool = True, what: str = "cells") -> list:
    """``k`` draws of ``space.sample(rng)`` from one RNG; with ``unique`` none repeats (ValueError if
    ``space.size()`` is smaller). Shared by every search space."""
    if unique and k > space.size():
        raise ValueError(f"cannot draw {k} distinct {what} from a space of {space.size()}")
    rng, out, seen = _rng(seed), [], set()
    while len(out) < k:
        g = space.sample(rng)
        if unique and g in seen:
            continue
        seen.add(g)
        out.append(g)
    return out


def _rng(seed: SeedLike) -> random.Random:
    if isinstance(seed, random.Random):
        return seed
    if isinstance(seed, torch.Generator):
        # one draw from the torch generator seeds a private RNG: the generator advances, so repeated calls differ
        return random.Random(int(torch.randint(0, 2 ** 62, (1,), generator=seed)))
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool)):
        return random.Random(seed)
    raise TypeError(f"seed must be an int, a torch.Generator, a random.Random or None, got {type(seed).__name__}")


@dataclass(frozen=True)
class SearchSpace:
    """What may be sampled; see the module docstring. Fields are validated and normalized to tuples.

    ``ops`` keeps :data:`ALL_OPS` order whatever order is given. Giving a ``topology`` fixes the node count.
    """
    node_counts: Tuple[int, ...] = NODE_COUNTS
    ops: Tuple[str, ...] = ALL_OPS
    topology: Optional[Topology] = None

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or not ops:
            raise ValueError(f"ops must be a non-empty list of operation names, got {ops!r}")
        for op in ops:
            if op not in ALL_OPS:
                raise ValueError(unknown_op_message(op, " in the search space"))
        object.__setattr__(self, "ops", tuple(op for op in ALL_OPS if op in set(ops)))
        counts = self.node_counts
        if isinstance(counts, int) and not isinstance(counts, bool):
            counts = (counts,)
        if not isinstance(counts, (list, tuple)) or not counts or any(c not in NODE_COUNTS for c in counts):
            raise ValueError(f"node_counts must be a non-empty subset of {NODE_COUNTS}, got {self.node_counts!r}")
        counts = tuple(sorted(set(counts)))
        if self.topology is not None:
            topo = validate_topology(self.topology)
            if len(topo) not in counts:
                raise ValueError(f"the topology has {len(topo)} nodes but node_counts is {counts}")
            object.__setattr__(self, "topology", topo)
            counts = (len(topo),)
        object.__setattr__(self, "node_counts", counts)

    # ------------------------------------------------------------------ membership and size
    def contains(self, genotype) -> bool:
        """Whether the genotype's node count, operations and (if fixed) wiring are allowed."""
        g = as_genotype(genotype)
        if g.num_nodes not in self.node_counts or any(op not in self.ops for op in g.ops):
            return False
        return self.topology is None or g.topology == self.topology

    def __contains__(self, genotype) -> bool:
        return self.contains(genotype)

    def size(self) -> int:
        """The number of distinct (canonical) genotypes, exactly, as a Python int."""
        k2 = len(self.ops) ** 2
        if self.topology is not None:
            return k2 ** len(self.topology)
        return sum(math.prod(math.comb(i + 2, 2) * k2 for i in range(n)) for n in self.node_counts)

    def topologies(self) -> Iterator[Topology]:
        """Every allowed wiring (just the fixed one when a topology is set)."""
        if self.topology is not None:
            yield self.topology
            return
        for n in self.node_counts:
            yield from itertools.product(*[list(itertools.combinations(range(i + 2), 2)) for i in range(n)])

    def genotypes(self) -> Iterator[Genotype]:
        """Every genotype of the space, in a fixed order (``size()`` of them: use on small spaces)."""
        for topo in self.topologies():
            for ops in itertools.product(self.ops, repeat=2 * len(topo)):
                yield Genotype(len(topo), tuple(((ops[2 * i], a), (ops[2 * i + 1], b))
                                                for i, (a, b) in enumerate(topo)))

    # ------------------------------------------------------------------ sampling and restriction
    def sample(self, seed: SeedLike = None) -> Genotype:
        """A uniformly random node count, wiring (unless fixed) and operation per edge.

        ``seed``: an int (reproducible), a ``torch.Generator`` or ``random.Random`` (advanced by the call, so
        repeated calls give a reproducible sequence), or None (fresh randomness).
        """
        rng = _rng(seed)
        if self.topology is not None:
            topo = self.topology
        else:
            n = rng.choice(self.node_counts)
            topo = tuple(tuple(sorted(rng.sample(range(i + 2), 2))) for i in range(n))
        return Genotype(len(topo), tuple(((rng.choice(self.ops), a), (rng.choice(self.ops), b)) for a, b in topo))

    def sample_many(self, k: int, seed: SeedLike = None, *, unique: bool = True) -> list:
        """``k`` samples from one RNG; with ``unique`` no genotype repeats (ValueError if the space is smaller)."""
        return sample_many(self, k, seed, unique=unique, what="genotypes")

    def restrict_to(self, genotype) -> "SearchSpace":
        """The task-aware restricted space: ``genotype``'s node count and wiring, only the operations it uses
        that this space allows; always a subspace of this one.

        Raises ValueError if the genotype shares no operation with this space, or its node count or wiring is
        not allowed here (the result would lie outside this space).
        """
        g = as_genotype(genotype)
        ops = tuple(op for op in g.op_set if op in self.ops)
        if not ops:
            raise ValueError(f"cannot restrict the space to {g}: it uses {', '.join(g.op_set)}, none of which this "
                             f"space allows ({', '.join(self.ops)}); the restriction would lie outside the space")
        if g.num_nodes not in self.node_counts:
            raise ValueError(f"cannot restrict the space to {g}: it has {g.num_nodes} nodes but this space allows "
                             f"{self.node_counts}")
        if self.topology is not None and g.topology != self.topology:
            raise ValueError(f"cannot restrict the space to {g}: its wiring {g.topology} differs from this "
                             f"space's fixed topology {self.topology}")
        return SearchSpace(node_counts=(g.num_nodes,), ops=ops, topology=g.topology)

    def network(self, genotype, *, channels: int = 16, layers: int = 3, num_classes: int = 10,
                in_channels: int = 3) -> "Network":
        """The skeleton network (:class:`~ftdfast.nas.network.Network`) around ``genotype``, which must lie in
        the space."""
        from .network import Network
        g = as_genotype(genotype)
        if not self.contains(g):
            raise ValueError(f"{g} is not in this search space")
        return Network(g, channels, layers, num_classes, in_channels)

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> Dict[str, Any]:
        return {"node_counts": list(self.node_counts), "ops": list(self.ops),
                "topology": None if self.topology is None else [list(p) for p in self.topology]}

    @classmethod
    def from_dict(cls, d: Any) -> "SearchSpace":
        if not isinstance(d, dict) or set(d) - {"node_counts", "ops", "topology"}:
            raise ValueError(f"malformed search space: expected an object with keys node_counts, ops, topology; "
                             f"got {d!r}")
        return cls(**{k: (tuple(v) if isinstance(v, list) and k != "topology" else v) for k, v in d.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        try:
            d = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed search space JSON: {e}") from None
        return cls.from_dict(d)

