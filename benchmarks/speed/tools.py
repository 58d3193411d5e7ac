"""Existing tools that compute the same diagonal empirical Fisher, for ``benchmarks.speed.compare``.

Each tool is a *preparer*: ``prepare(model) -> fn`` does the one-off set-up on a private copy of the
model (BackPACK's ``extend``, Opacus' ``GradSampleModule``), and ``fn(x, y)`` returns
``{name: F}`` with ``F = (1/N) sum_n g_n * g_n`` (per-sample gradients of the summed
cross-entropy), so it can be checked against ftdfast before it is timed.

=========  =====================================================================================
tool       how
=========  =====================================================================================
backpack   ``backpack-for-pytorch``: ``SumGradSquared`` on a ``sum`` cross-entropy (per-sample
           gradients per layer, N x P_layer; ``use_converter=True`` for residual models). Install
           with ``pip install --no-deps backpack-for-pytorch unfoldNd`` (its torchvision pin
           conflicts).
opacus     ``opacus.GradSampleModule`` with ``loss_reduction="sum"``: ``p.grad_sample`` (N x P),
           squared and summed; run in training mode, which Opacus needs. Opacus refuses BatchNorm.
=========  =====================================================================================

The per-sample loop and torch.func ``vmap(grad)`` are ftdfast's own ``"loop"`` and ``"func"``
backends. A tool that is not installed is reported as missing, not as a failure.
"""
from __future__ import annotations

import copy
import importlib.util
from typing import Callable, Dict

import torch
import torch.nn.functional as F

Fisher = Dict[str, torch.Tensor]
TOOLS = ("backpack", "opacus")


def available(tool: str) -> bool:
    module = {"backpack": "backpack", "opacus": "opacus"}[tool]
    return importlib.util.find_spec(module) is not None


def _trainable(model: torch.nn.Module):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def prepare_backpack(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], Fisher]:
    from backpack import backpack, extend
    from backpack.extensions import SumGradSquared

    names = [n for n, _ in _trainable(model)]
    net = extend(copy.deepcopy(model).eval(), use_converter=True)
    lossfunc = extend(torch.nn.CrossEntropyLoss(reduction="sum"))
    # use_converter renames parameters; the order of trainable parameters is kept.
    params = [p for p in net.parameters() if p.requires_grad]
    if len(params) != len(names):
        raise RuntimeError(f"BackPACK's converter changed the parameter count ({len(params)} != {len(names)})")

    def run(x: torch.Tensor, y: torch.Tensor) -> Fisher:
        net.zero_grad(set_to_none=True)
        loss = lossfunc(net(x), y)
        with backpack(SumGradSquared()):
            loss.backward()
        return {n: p.sum_grad_squared.detach() / len(y) for n, p in zip(names, params)}

    return run


def prepare_opacus(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], Fisher]:
    from opacus import GradSampleModule

    # Opacus records activations only in training mode; the benchmark models have no dropout, and
    # BatchNorm (whose training mode would mix samples) is refused by Opacus itself.
    net = GradSampleModule(copy.deepcopy(model).train(), loss_reduction="sum")
    pairs = [(n[len("_module."):] if n.startswith("_module.") else n, p)
             for n, p in net.named_parameters() if p.requires_grad]

    def run(x: torch.Tensor, y: torch.Tensor) -> Fisher:
        net.zero_grad(set_to_none=True)
        for _, p in pairs:
            p.grad_sample = None
        F.cross_entropy(net(x), y, reduction="sum").backward()
        return {n: p.grad_sample.pow(2).sum(0) / len(y) for n, p in pairs}

    return run


PREPARE = {"backpack": prepare_backpack, "opacus": prepare_opacus}


def prepare(tool: str, model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], Fisher]:
    if tool not in PREPARE:
        raise ValueError(f"unknown tool {tool!r}; choose from {', '.join(TOOLS)}")
    if not available(tool):
        raise ModuleNotFoundError(f"{tool} is not installed (see benchmarks/speed/tools.py for the install command)")
    return PREPARE[tool](model)
