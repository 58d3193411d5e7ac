"""Cells and the skeleton network of TA-NAS (DARTS-style).

**Cell** (``Cell(genotype, C_pp, C_p, C, reduction, reduction_prev)``): inputs ``s0`` (the output of the
cell two back, ``C_pp`` channels) and ``s1`` (the previous cell's, ``C_p`` channels) are first brought to
``C`` channels: ``s1`` by a 1x1 ReLU-conv-BN, ``s0`` by a 1x1 ReLU-conv-BN, or by a
:class:`~ftdfast.nas.operations.FactorizedReduce` when the previous cell was a reduction cell (``s0`` is then
twice as large as ``s1``). Node ``i`` is ``op_a(state[in_a]) + op_b(state[in_b])`` with
``state = [s0, s1, node_0, node_1, ...]``. The cell's output concatenates all intermediate nodes along the
channels: ``num_nodes * C`` channels. In a reduction cell the edges that read ``s0`` or ``s1`` run at stride 2
(every node is then half the size); edges between nodes run at stride 1.

**Network** (``Network(genotype, channels, layers, num_classes, in_channels)``)::

    x (n, in_channels, h, w)
      -> stem: 3x3 conv (no bias) to stem_multiplier * channels, BatchNorm        s0 = s1 = stem(x)
      -> `layers` cells: s0, s1 = s1, cell(s0, s1); the cells at indices layers // 3 and 2 * layers // 3
         are reduction cells (stride 2, C doubled), the others normal cells (C channels per node)
      -> global average pooling, Linear(num_nodes * C_last, num_classes)    -> logits (n, num_classes)

Works for any input size (8x8 digits, 28x28, 32x32, odd sizes): a reduction gives ``ceil(h / 2)``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn

from .genotype import Genotype, as_genotype
from .operations import FactorizedReduce, make_op, relu_conv_bn


class Cell(nn.Module):
    """One cell; see the module docstring. ``(n, C_pp, h0, w0), (n, C_p, h, w) -> (n, num_nodes * C, h', w')``."""

    def __init__(self, genotype: Genotype, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 affine: bool = True):
        super().__init__()
        self.genotype = genotype
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.C = C
        self.num_nodes = genotype.num_nodes
        self.preprocess0 = (FactorizedReduce(C_pp, C, affine) if reduction_prev
                            else relu_conv_bn(C_pp, C, 1, 1, affine=affine))
        self.preprocess1 = relu_conv_bn(C_p, C, 1, 1, affine=affine)
        self.edge_ops = nn.ModuleList()     # 2 * num_nodes, in node order
        self.edge_keys: List[Tuple[str, int]] = []    # (op name, stride) per edge
        self.edge_inputs: List[int] = []
        for node in genotype.edges:
            for op, j in node:
                stride = 2 if reduction and j < 2 else 1
                self.edge_ops.append(make_op(op, C, stride, affine))
                self.edge_keys.append((op, stride))
                self.edge_inputs.append(j)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.num_nodes):
            a, b = 2 * i, 2 * i + 1
            h = (self.edge_ops[a](states[self.edge_inputs[a]])
                 + self.edge_ops[b](states[self.edge_inputs[b]]))
            states.append(h)
        return torch.cat(states[2:], dim=1)


def reduction_indices(layers: int) -> Tuple[int, ...]:
    """Indices of the reduction cells: ``layers // 3`` and ``2 * layers // 3`` (one index when they coincide)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


class Network(nn.Module):
    """The skeleton network around one cell genotype; see the module docstring.

    Attributes: ``genotype``, ``channels``, ``layers``, ``num_classes``, ``in_channels``, ``stem_multiplier``,
    ``affine``; submodules ``stem`` (Sequential: conv, bn), ``cells`` (ModuleList), ``global_pooling``,
    ``classifier``.
    """

    def __init__(self, genotype, channels: int = 16, layers: int = 3, num_classes: int = 10,
                 in_channels: int = 3, *, stem_multiplier: int = 3, affine: bool = True):
        super().__init__()
        genotype = as_genotype(genotype)
        for name, v, lo in (("channels", channels, 1), ("layers", layers, 1), ("num_classes", num_classes, 1),
                            ("in_channels", in_channels, 1), ("stem_multiplier", stem_multiplier, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        self.genotype = genotype
        self.channels, self.layers, self.num_classes = channels, layers, num_classes
        self.in_channels, self.stem_multiplier, self.affine = in_channels, stem_multiplier, affine
        C_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, channels
        reductions = reduction_indices(layers)
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            self.cells.append(Cell(genotype, C_pp, C_p, C_curr, reduction, reduction_prev, affine))
            reduction_prev = reduction
            C_pp, C_p = C_p, genotype.num_nodes * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def skeleton(self) -> tuple:
        """What candidates must share to run as one batched network (everything but the cell's operations)."""
        return (self.channels, self.layers, self.num_classes, self.in_channels, self.stem_multiplier,
                self.affine, self.genotype.num_nodes)

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Network expects images (n, {self.in_channels}, h, w), got {shape}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Network was built for in_channels={self.in_channels} but the input has "
                             f"{x.shape[1]} channels (shape {tuple(x.shape)}); build it with "
                             f"in_channels={x.shape[1]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, in_channels, h, w) -> (n, num_classes)`` logits."""
        self.check_input(x)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The number of parameter elements (all, or those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def param_millions(self) -> float:
        """``num_parameters() / 1e6``."""
        return self.num_parameters() / 1e6

    def extra_repr(self) -> str:
        return (f"genotype={self.genotype}, channels={self.channels}, layers={self.layers}, "
                f"num_classes={self.num_classes}, in_channels={self.in_channels}")
