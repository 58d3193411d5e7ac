"""The ten operations of the TA-NAS search space and the registry :data:`OPS`.

Every operation maps ``(n, C, h, w)`` to ``(n, C, h', w')`` with ``h' = h`` at stride 1 and
``h' = ceil(h / 2)`` at stride 2, for any ``h`` (odd sizes included), so the two edges of a node always add up.
Channels never change inside an operation: the cell's preprocessing brings its inputs to ``C`` channels.

====================  =========================================================================  ==================
name                  stride 1 / stride 2                                                        parameters (affine)
====================  =========================================================================  ==================
``zero``              zeros of the input's shape / of the reduced shape                           0
``identity``          the input / :class:`FactorizedReduce` (two 1x1 stride-2 convs, concatenated) 0 / C^2 + 2C
``max_pool_3x3``      3x3 max pooling, padding 1                                                   0
``avg_pool_3x3``      3x3 average pooling, padding 1, padding not counted                          0
``conv_3x3``          ReLU, 3x3 conv, BatchNorm                                                    9 C^2 + 2C
``conv_5x5``          ReLU, 5x5 conv, BatchNorm                                                    25 C^2 + 2C
``conv_7x7``          ReLU, 7x7 conv, BatchNorm                                                    49 C^2 + 2C
``dil_conv_3x3``      ReLU, 3x3 conv with dilation 2 (5x5 field), BatchNorm                        9 C^2 + 2C
``dil_conv_5x5``      ReLU, 5x5 conv with dilation 2 (9x9 field), BatchNorm                        25 C^2 + 2C
``conv_7x1_1x7``      ReLU, 1x7 conv, 7x1 conv, BatchNorm                                          14 C^2 + 2C
====================  =========================================================================  ==================

Convolutions have no bias (the BatchNorm follows) and are full convolutions (the paper lists plain and dilated
convolutions, not the separable ones of DARTS). ``affine=False`` drops the BatchNorm's scale and shift (2C).
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .genotype import ALL_OPS, unknown_op_message


class Zero(nn.Module):
    """Zeros of shape ``(n, C, h, w)`` at stride 1, ``(n, C, ceil(h/2), ceil(w/2))`` at stride 2."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ConvOp(nn.Module):
    """ReLU, then one or more bias-free convolutions, then BatchNorm: ``(n, C_in, h, w) -> (n, C_out, h', w')``.

    ``convs`` is a list of ``(kernel (kh, kw), stride (sh, sw), padding (ph, pw), dilation)``; the first maps
    ``C_in -> C_out``, the others ``C_out -> C_out``. Submodules: ``relu``, ``convs`` (ModuleList), ``bn``.
    """

    def __init__(self, C_in: int, C_out: int, convs: Sequence[Tuple], affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        mods = []
        for i, (k, s, p, d) in enumerate(convs):
            mods.append(nn.Conv2d(C_in if i == 0 else C_out, C_out, k, stride=s, padding=p, dilation=d, bias=False))
        self.convs = nn.ModuleList(mods)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        for conv in self.convs:
            x = conv(x)
        return self.bn(x)


def relu_conv_bn(C_in: int, C_out: int, kernel: int, stride: int, dilation: int = 1, affine: bool = True) -> ConvOp:
    """A square ``kernel`` convolution with "same" padding (``dilation * (kernel - 1) / 2``)."""
    pad = dilation * (kernel - 1) // 2
    return ConvOp(C_in, C_out, [((kernel, kernel), (stride, stride), (pad, pad), dilation)], affine)


def conv_7x1_1x7(C: int, stride: int, affine: bool = True) -> ConvOp:
    """ReLU, a 1x7 conv (stride along w), a 7x1 conv (stride along h), BatchNorm (as in DARTS)."""
    return ConvOp(C, C, [((1, 7), (1, stride), (0, 3), 1), ((7, 1), (stride, 1), (3, 0), 1)], affine)


class FactorizedReduce(nn.Module):
    """Halve the spatial size and map ``C_in -> C_out`` channels (DARTS): ReLU, two 1x1 stride-2 convs, BatchNorm.

    ``conv_1`` reads the even positions, ``conv_2`` the odd ones (the input shifted by one pixel; the last row
    and column are zero-padded first, so odd sizes work: both give ``ceil(h/2)``). Their outputs
    (``C_out // 2`` and ``C_out - C_out // 2`` channels) are concatenated, then batch-normalized.
    Parameters: ``C_in * C_out`` (+ ``2 C_out`` when affine).
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    @staticmethod
    def shift(x: torch.Tensor) -> torch.Tensor:
        """``(n, c, h, w) -> (n, c, h, w)``: the input moved up-left by one pixel, zero-filled at the end."""
        return F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(self.shift(x))], dim=1))


def _identity(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


class _Registry(dict):
    """``OPS[name]``: a constructor ``(C, stride, affine) -> nn.Module``; an unknown name is a ValueError."""

    def __missing__(self, name):
        raise ValueError(unknown_op_message(name))


OPS: Dict[str, Callable[[int, int, bool], nn.Module]] = _Registry({
    "zero": lambda C, stride, affine: Zero(stride),
    "identity": _identity,
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "conv_3x3": lambda C, stride, affine: relu_conv_bn(C, C, 3, stride, 1, affine),
    "conv_5x5": lambda C, stride, affine: relu_conv_bn(C, C, 5, stride, 1, affine),
    "conv_7x7": lambda C, stride, affine: relu_conv_bn(C, C, 7, stride, 1, affine),
    "dil_conv_3x3": lambda C, stride, affine: relu_conv_bn(C, C, 3, stride, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: relu_conv_bn(C, C, 5, stride, 2, affine),
    "conv_7x1_1x7": conv_7x1_1x7,
})
assert tuple(OPS) == ALL_OPS


def make_op(name: str, C: int, stride: int, affine: bool = True) -> nn.Module:
    """The operation ``name`` on ``C`` channels at ``stride`` 1 or 2 (ValueError for anything else)."""
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")
    return OPS[name](C, stride, affine)
