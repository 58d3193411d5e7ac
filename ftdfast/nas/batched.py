"""Run many candidate networks as one: grouped convolutions over the candidates' stacked channels.

:class:`BatchedCandidates` wraps K candidate modules and returns their logits ``(n, K, num_classes)``.
Candidates that are :class:`~ftdfast.nas.network.Network` s with the same skeleton (channels, layers,
classes, input channels, stem multiplier, affine, node count) form a *fused group* and run together:

* every activation of a fused group of G candidates is one tensor ``(n, G * c, h, w)``, candidate-major
  (candidate ``g`` owns channels ``[g * c, (g + 1) * c)``);
* the stem is one convolution with the G stems' weights stacked (``G * 3C`` output channels), every
  BatchNorm one ``batch_norm`` over the stacked channels (per-channel, so identical to G separate ones);
* the preprocessing convolutions are one grouped convolution (``groups = G``);
* inside a cell, the edges of all candidates and nodes run in *stages* by the level of their input
  (s0/s1 first, then the nodes that depend only on them, ...; topologies need not match): a stage groups
  its edges by (operation, stride), gathers each group's inputs with one ``index_select`` and runs each
  group once: convolutions as one grouped convolution (``groups = |group|``) with one BatchNorm call for
  all convolution groups of the stage, pools directly (they are per-channel), ``zero`` not at all; then
  the nodes of the next level add their two edge outputs;
* the head is one batched matrix product over the G classifiers.

The weights stay in the candidate modules (the stacked weights are concatenated at each forward, so
gradients, optimizers and state dicts work on the candidates as usual), and BatchNorm running statistics
are written back to each candidate's buffers in training mode, so the fused forward equals running the
candidates one after another up to rounding, in both modes (the tests check float64 logits, gradients and
running statistics). Other candidates (any ``nn.Module``, or a skeleton shared by no other candidate) run on
their own, and so do the candidates of a group with an edge operation of a kind this module does not know
(a new operation in :data:`~ftdfast.nas.operations.OPS` runs correctly without an edit here, only unbatched).

When it pays (see :data:`AUTO_MAX_BYTES` and ``benchmarks/speed/bench_fuse.py``): fusing removes per-operation
overhead, so it helps where the candidates are small (few channels, small images, small batches) and on
GPUs; on a CPU with large activations the convolutions are compute-bound and the stacked tensors outgrow
the caches, so ``batched="auto"`` runs those one after another.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .network import Network
from .operations import ConvOp, FactorizedReduce, Identity, Zero


def _cat(ts: List[torch.Tensor]) -> torch.Tensor:
    return ts[0] if len(ts) == 1 else torch.cat(ts, 0)


def _batch_norm(x: torch.Tensor, bns: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """``bns[g]`` applied to channels ``[g c, (g + 1) c)`` of ``x (n, G c, h, w)``, running stats written back."""
    bn0 = bns[0]
    weight = _cat([b.weight for b in bns]) if bn0.affine else None
    bias = _cat([b.bias for b in bns]) if bn0.affine else None
    mean = _cat([b.running_mean for b in bns])
    var = _cat([b.running_var for b in bns])
    if not bn0.training:
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, bn0.eps)
    if bn0.momentum is None:  # pragma: no cover - the search space never builds these
        raise ValueError("fused BatchNorm needs a fixed momentum (momentum=None is a cumulative average)")
    with torch.no_grad():
        torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
    y = F.batch_norm(x, mean, var, weight, bias, True, bn0.momentum, bn0.eps)
    if len(bns) > 1:   # F.batch_norm updated the concatenated copies: write them back
        c = bn0.num_features
        with torch.no_grad():
            torch._foreach_copy_([b.running_mean for b in bns] + [b.running_var for b in bns],
                                 list(mean.split(c)) + list(var.split(c)))
    return y


def _convs(x: torch.Tensor, mods: Sequence[ConvOp]) -> torch.Tensor:
    """The convolutions of G ConvOps (no ReLU, no BN) as grouped convolutions on ``(n, G * C_in, h, w)``."""
    for j, conv in enumerate(mods[0].convs):
        w = _cat([m.convs[j].weight for m in mods])
        x = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, len(mods))
    return x


def _fr_convs(x: torch.Tensor, mods: Sequence[FactorizedReduce]) -> torch.Tensor:
    """The two convolutions of G FactorizedReduces (no ReLU, no BN), interleaved per candidate."""
    G = len(mods)
    a = F.conv2d(x, _cat([m.conv_1.weight for m in mods]), None, 2, 0, 1, G)
    b = F.conv2d(FactorizedReduce.shift(x), _cat([m.conv_2.weight for m in mods]), None, 2, 0, 1, G)
    n, _, h, w = a.shape
    return torch.cat([a.view(n, G, -1, h, w), b.view(n, G, -1, h, w)], dim=2).view(n, -1, h, w)


def _conv_op(x: torch.Tensor, mods: Sequence[ConvOp]) -> torch.Tensor:
    """G ConvOps (ReLU, convs, BN) on ``(n, G * C_in, h, w)``."""
    return _batch_norm(_convs(F.relu(x), mods), [m.bn for m in mods])


def _factorized_reduce(x: torch.Tensor, mods: Sequence[FactorizedReduce]) -> torch.Tensor:
    return _batch_norm(_fr_convs(F.relu(x), mods), [m.bn for m in mods])


class _Index:
    """Positions along dim 1 of a 5-D tensor ``(n, M, c, h, w)``; ``take`` uses a view when they are a range."""

    def __init__(self, positions: Sequence[int], size: int):
        self.positions = list(positions)
        m = len(self.positions)
        self.full = self.positions == list(range(size))
        first = self.positions[0] if m else 0
        self.start = first if self.positions == list(range(first, first + m)) else None
        self._cpu = torch.tensor(self.positions, dtype=torch.long)
        self._on = {}

    def take(self, x: torch.Tensor) -> torch.Tensor:
        if self.full:
            return x
        if self.start is not None:
            return x.narrow(1, self.start, len(self.positions))
        idx = self._on.get(x.device)
        if idx is None:
            idx = self._on[x.device] = self._cpu.to(x.device)
        return x.index_select(1, idx)


class _NoBatchedForm(Exception):
    """An operation :func:`_kind` does not know: its candidates run one after another."""


def _kind(m: nn.Module):
    """The batched form of one edge operation: ``"zero"``, ``"identity"``, ``"conv"``, ``"fr"``, ``"pool"``,
    or ``None`` (no batched form: an operation registered in :data:`~ftdfast.nas.operations.OPS` since)."""
    return ("zero" if isinstance(m, Zero) else "identity" if isinstance(m, Identity)
            else "conv" if isinstance(m, ConvOp) else "fr" if isinstance(m, FactorizedReduce)
            else "pool" if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) else None)


class _OpGroup:
    """The (candidate, node, edge) triples of one stage that share an operation and stride."""

    def __init__(self, key, mods, src: _Index):
        self.key, self.mods, self.src = key, list(mods), src
        m = mods[0]
        self.kind = _kind(m)
        if self.kind is None:
            raise _NoBatchedForm(type(m).__name__)
        self.bn = self.kind in ("conv", "fr")
        self.stride = key[1]


class _CellPlan:
    """The fused schedule of one cell position across G candidates (topologies may differ).

    Every state is a 5-D tensor ``(n, m, C, h, w)`` (m members, member-major). The *level* of s0/s1 is 0,
    the level of a node ``1 + max(level of its inputs)``. Stage ``t`` runs every edge (of every candidate
    and node) whose input has level ``t``: its edges are grouped by (operation, stride) and each group runs
    once over its members' gathered inputs (one grouped convolution; the BatchNorms of all convolution groups
    of the stage as one); then the nodes of level ``t + 1`` add their two edge outputs. The cell output puts
    the nodes back in (candidate, node) order.
    """

    def __init__(self, cells: Sequence[nn.Module]):
        G = len(cells)
        c0 = cells[0]
        self.G, self.C, self.num_nodes = G, c0.C, c0.num_nodes
        self.reduction_prev = c0.reduction_prev
        self.pre0 = [c.preprocess0 for c in cells]
        self.pre1 = [c.preprocess1 for c in cells]
        level = {}                                  # (k, state index) -> level
        for k, cell in enumerate(cells):
            level[(k, 0)] = level[(k, 1)] = 0
            for i in range(cell.num_nodes):
                level[(k, i + 2)] = 1 + max(level[(k, cell.edge_inputs[2 * i + e])] for e in (0, 1))
        self.depth = T = max(level.values())
        # nodes of each level, in (k, i) order; their position in the level's tensor
        self.level_nodes = {L: [(k, s - 2) for (k, s), lv in sorted(level.items()) if lv == L and s >= 2]
                            for L in range(1, T + 1)}
        node_pos = {(k, i): p for L in self.level_nodes for p, (k, i) in enumerate(self.level_nodes[L])}
        # stages: edges grouped by (op, stride); convolution-type groups first (one BatchNorm for all)
        self.stages = {}
        self.gathers = {}                           # stage -> ((relu index, sizes), (raw index, sizes))
        edge_pos = {}                               # (k, i, e) -> (stage, position in the stage's output)
        for t in range(T):
            by_key = OrderedDict()
            for k, cell in enumerate(cells):
                for i in range(cell.num_nodes):
                    for e in (0, 1):
                        j = cell.edge_inputs[2 * i + e]
                        if level[(k, j)] == t:
                            by_key.setdefault(cell.edge_keys[2 * i + e], []).append((k, i, e, j))
            if not by_key:
                continue
            src_size = 2 * G if t == 0 else len(self.level_nodes[t])
            groups = []
            for key, members in by_key.items():
                src = _Index([j * G + k if t == 0 else node_pos[(k, j - 2)] for k, i, e, j in members], src_size)
                grp = _OpGroup(key, [cells[k].edge_ops[2 * i + e] for k, i, e, j in members], src)
                grp.members = [(k, i, e) for k, i, e, j in members]
                groups.append(grp)
            groups.sort(key=lambda g: not g.bn)     # stable: BN groups first
            # one gather per stage from relu(src) (convolution groups, BN-first) and one from src (pools, identity)
            gathers = []
            for relu in (True, False):
                sel = [g for g in groups if g.kind != "zero" and g.bn == relu]
                gathers.append((_Index([p for g in sel for p in g.src.positions], src_size) if sel else None,
                                [len(g.members) for g in sel]))
            self.gathers[t] = gathers
            p = 0
            for grp in groups:
                for m in grp.members:
                    edge_pos[m] = (t, p)
                    p += 1
            self.stages[t] = groups
        # per level: where each node's two edge outputs sit in the concatenation of the earlier stages
        self.node_edges = {}
        for L, nodes in self.level_nodes.items():
            stages = sorted({edge_pos[(k, i, e)][0] for k, i in nodes for e in (0, 1)})
            offset, size = {}, 0
            for t in stages:
                offset[t] = size
                size += sum(len(g.members) for g in self.stages[t])
            a, b = ([offset[edge_pos[(k, i, e)][0]] + edge_pos[(k, i, e)][1] for k, i in nodes] for e in (0, 1))
            self.node_edges[L] = (stages, _Index(a, size), _Index(b, size))
        order = [(k, i) for L in range(1, T + 1) for k, i in self.level_nodes[L]]
        pos = {ki: p for p, ki in enumerate(order)}
        self.out = _Index([pos[(k, i)] for k in range(G) for i in range(self.num_nodes)], len(order))

    def _stage(self, t: int, src: torch.Tensor) -> torch.Tensor:
        """Run stage ``t``'s groups on ``src (n, M, C, h, w)``; ``(n, edges, C, h', w')``."""
        n, C, h, w = src.shape[0], self.C, src.shape[3], src.shape[4]
        inputs = []
        for (index, sizes), source in zip(self.gathers[t], ("relu", "raw")):
            if index is None:
                continue
            x = index.take(F.relu(src) if source == "relu" else src)
            chunks = [x] if len(sizes) == 1 else x.split(sizes, dim=1)
            inputs += [c.reshape(n, -1, h, w) for c in chunks]
        pre_bn, bns, rest = [], [], []
        inputs = iter(inputs)
        for grp in self.stages[t]:
            if grp.kind == "zero":
                s = grp.stride
                rest.append(src.new_zeros(n, len(grp.members) * C, (h + s - 1) // s, (w + s - 1) // s))
                continue
            x = next(inputs)
            if grp.kind == "conv":
                pre_bn.append(_convs(x, grp.mods))
                bns += [m.bn for m in grp.mods]
            elif grp.kind == "fr":
                pre_bn.append(_fr_convs(x, grp.mods))
                bns += [m.bn for m in grp.mods]
            elif grp.kind == "pool":
                rest.append(grp.mods[0](x))
            else:
                rest.append(x)
        parts = ([_batch_norm(pre_bn[0] if len(pre_bn) == 1 else torch.cat(pre_bn, 1), bns)] if pre_bn else []) + rest
        out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        return out.view(n, -1, C, out.shape[2], out.shape[3])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """``(n, G C_pp, h0, w0), (n, G C_p, h, w) -> (n, G num_nodes C, h', w')`` in candidate-major order."""
        G, C = self.G, self.C
        s0 = _factorized_reduce(s0, self.pre0) if self.reduction_prev else _conv_op(s0, self.pre0)
        s1 = _conv_op(s1, self.pre1)
        n, _, h, w = s1.shape
        src = torch.cat([s0.view(n, G, C, h, w), s1.view(n, G, C, h, w)], 1)
        outs, nodes = {}, []
        for t in range(self.depth):
            if t in self.stages:
                outs[t] = self._stage(t, src)
            stages, a, b = self.node_edges[t + 1]
            edges = outs[stages[0]] if len(stages) == 1 else torch.cat([outs[s] for s in stages], 1)
            src = a.take(edges) + b.take(edges)
            nodes.append(src)
        allnodes = nodes[0] if len(nodes) == 1 else torch.cat(nodes, 1)
        out = self.out.take(allnodes)
        return out.reshape(n, -1, out.shape[3], out.shape[4])


class _FusedGroup:
    """G Networks with one skeleton, run as one; see the module docstring."""

    def __init__(self, nets: Sequence[Network]):
        self.nets = list(nets)
        self.G = len(nets)
        self.cells = [_CellPlan([net.cells[l] for net in nets]) for l in range(nets[0].layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, in_channels, h, w) -> (n, G, num_classes)``."""
        nets, G = self.nets, self.G
        nets[0].check_input(x)
        conv = nets[0].stem[0]
        s = F.conv2d(x, _cat([net.stem[0].weight for net in nets]), None, conv.stride, conv.padding,
                     conv.dilation, 1)
        s0 = s1 = _batch_norm(s, [net.stem[1] for net in nets])
        for cell in self.cells:
            s0, s1 = s1, cell.forward(s0, s1)
        feats = F.adaptive_avg_pool2d(s1, 1).view(s1.shape[0], G, -1).transpose(0, 1)    # (G, n, c)
        weight = torch.stack([net.classifier.weight for net in nets])                      # (G, k, c)
        bias = torch.stack([net.classifier.bias for net in nets])                          # (G, k)
        return torch.baddbmm(bias.unsqueeze(1), feats, weight.transpose(1, 2)).transpose(0, 1)


#: ``batched="auto"`` on CPU fuses a group only while one candidate's stem output, ``n * 3C * h * w`` elements,
#: takes at most this many bytes. Measured on a 2-core x86 CPU, one thread (``benchmarks/speed/bench_fuse.py``): 8
#: candidates fused ran 1.3-1.4x faster at 8x8 inputs, C=8, batch 32 (0.2 MB), about as fast at C=16, batch 64
#: (0.8 MB) and 0.7x as fast at 32x32, C=16, batch 64 (12.6 MB): there the convolutions are compute-bound, and
#: the stacked activations outgrow the caches.
AUTO_MAX_BYTES = 2 * 1024 * 1024


class BatchedCandidates(nn.Module):
    """K candidate modules evaluated together: ``forward(x) -> (n, K, num_classes)`` logits in candidate order.

    ``batched``: ``True`` runs each group of candidates that share a skeleton as one network, ``False`` runs the
    candidates one after another (the reference), ``"auto"`` fuses on CUDA always and on CPU only for small
    activations (see :data:`AUTO_MAX_BYTES`; the choice depends only on the shapes, so runs stay
    reproducible). A group with an edge operation that has no batched form (one registered in
    :data:`~ftdfast.nas.operations.OPS` after this module was written) runs one after another; ``unbatched_ops``
    names those operations' classes. Candidates are registered as ``self.nets`` (an ``nn.ModuleList``), so
    ``parameters()``, ``train()``/``eval()``, ``to()`` and ``state_dict()`` reach them. A group whose members are
    not all in the same mode runs sequentially.
    """

    def __init__(self, candidates: Sequence[nn.Module], *, batched: Union[bool, str] = True,
                 auto_max_bytes: int = AUTO_MAX_BYTES):
        super().__init__()
        if len(candidates) == 0:
            raise ValueError("BatchedCandidates needs at least one candidate")
        if batched not in (True, False, "auto"):
            raise ValueError(f"batched must be True, False or 'auto', got {batched!r}")
        self.nets = nn.ModuleList(candidates)
        self.batched = batched
        self.auto_max_bytes = auto_max_bytes
        by_skeleton = OrderedDict()
        for k, net in enumerate(candidates):
            key = net.skeleton() if type(net) is Network else ("single", k)
            by_skeleton.setdefault(key, []).append(k)
        self.unbatched_ops: List[str] = []      # operations with no batched form met in a shared skeleton
        self._groups = [(idx, self._fused([candidates[k] for k in idx]) if len(idx) > 1 else None)
                        for idx in by_skeleton.values()]

    def _fused(self, nets: Sequence[Network]):
        """One fused group, or ``None`` when an edge operation has no batched form (the group then runs its
        candidates one after another, which is always correct: a new operation needs no edit here)."""
        try:
            return _FusedGroup(nets)
        except _NoBatchedForm as e:
            if str(e) not in self.unbatched_ops:
                self.unbatched_ops.append(str(e))
            return None

    @property
    def fused_groups(self) -> List[List[int]]:
        """The candidate indices of each group that can run fused (shared skeleton, two or more members)."""
        return [list(idx) for idx, grp in self._groups if grp is not None]

    def fuses(self, x: torch.Tensor) -> List[List[int]]:
        """The groups that run fused for input ``x`` (see ``batched``)."""
        return [list(idx) for idx, grp in self._groups if self._fuse(idx, grp, x)]

    def _fuse(self, idx, grp, x: torch.Tensor) -> bool:
        if grp is None or not self.batched or len({self.nets[k].training for k in idx}) != 1:
            return False
        if self.batched == "auto" and x.device.type == "cpu":
            net = grp.nets[0]
            stem_bytes = x.shape[0] * net.stem_multiplier * net.channels * x.shape[-2] * x.shape[-1] * x.element_size()
            return stem_bytes <= self.auto_max_bytes
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [None] * len(self.nets)
        for idx, grp in self._groups:
            if self._fuse(idx, grp, x):
                for k, o in zip(idx, grp.forward(x).unbind(1)):
                    outs[k] = o
            else:
                for k in idx:
                    outs[k] = self.nets[k](x)
        return torch.stack(outs, dim=1)
