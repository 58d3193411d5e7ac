"""Heads: finding a network's head, fitting a linear head on features, swapping and re-initializing.

Index letters: n samples, D features (the head's input), C head outputs.
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..train import seed_everything

#: L2 penalty (on the weights, not the bias) and L-BFGS iterations of :func:`fit_linear_head`.
PROBE_L2 = 1e-3
PROBE_ITERS = 100


def find_head(model: nn.Module, head_module: Optional[str] = None, *, what: str = "the model") -> str:
    """The dotted name of ``model``'s head: ``head_module`` if given (it must be an ``nn.Linear``), else
    the last ``nn.Linear`` in ``model.named_modules()`` order."""
    modules = dict(model.named_modules())
    if head_module is not None:
        if head_module not in modules:
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            raise ValueError(f"{what} has no submodule {head_module!r}; its nn.Linear modules are {linears}")
        if not isinstance(modules[head_module], nn.Linear):
            raise ValueError(f"head_module={head_module!r} of {what} is a {type(modules[head_module]).__name__}, "
                             "not an nn.Linear: name the final linear classifier")
        return head_module
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{what} has no nn.Linear module to use as its head: give a classifier whose last layer "
                         "is an nn.Linear, or name it with head_module=")
    return linears[-1]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace ``model``'s submodule at dotted ``name`` by ``module``."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fit_linear_head(features: np.ndarray, labels: np.ndarray, width: int, *, l2: float = PROBE_L2,
                    iters: int = PROBE_ITERS) -> nn.Linear:
    """An ``nn.Linear(D, width)``: multinomial logistic regression on ``features (n, D)`` for ``labels (n,)`` in
    [0, width).

    Minimizes mean cross-entropy + ``l2``/2 ||W||^2 in float64 with L-BFGS (strong Wolfe line search,
    ``iters`` iterations) from all-zero weights, so the fit is deterministic (no random draws). Outputs
    that no label uses are pushed low, as a shared-width head's unused outputs are in training.
    Returns a float32 module on the CPU.
    """
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    W = torch.zeros(width, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(width, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                            tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ W.T + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    head = nn.Linear(x.shape[1], width)
    with torch.no_grad():
        head.weight.copy_(W.detach())
        head.bias.copy_(b.detach())
    return head


def with_head(model: nn.Module, head_name: str, head: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose submodule ``head_name`` is ``head`` (moved to the model's device and dtype)."""
    net = copy.deepcopy(model)
    ref = next(net.parameters())
    set_submodule(net, head_name, head.to(device=ref.device, dtype=ref.dtype))
    return net.eval()


def reinitialized(model: nn.Module, head_name: str, width: int, seed: int) -> nn.Module:
    """A copy of ``model`` with fresh weights (``reset_parameters`` of every module, after
    ``seed_everything(seed)``) and a new ``nn.Linear`` head of ``width`` outputs at ``head_name``.

    Raises:
        ValueError: a module that holds parameters of its own has no ``reset_parameters`` (the copy
            would keep trained weights there): pass the target's network yourself (``target_model=``).
    """
    net = copy.deepcopy(model)
    for name, m in net.named_modules():
        if name != head_name and any(True for _ in m.parameters(recurse=False)) \
                and not hasattr(m, "reset_parameters"):
            raise ValueError(f"cannot re-initialize {name or '<model>'} ({type(m).__name__}): it holds parameters "
                             "but has no reset_parameters(); train the target's network yourself and pass it as "
                             "target_model=")
    seed_everything(seed)
    for name, m in net.named_modules():
        if hasattr(m, "reset_parameters") and name != head_name:
            m.reset_parameters()
    old = net.get_submodule(head_name)
    head = nn.Linear(old.in_features, width, bias=old.bias is not None)
    set_submodule(net, head_name, head.to(device=old.weight.device, dtype=old.weight.dtype))
    return net
