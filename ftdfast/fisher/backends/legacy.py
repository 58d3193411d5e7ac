"""The ``"legacy"`` backend: what the authors' public code computes. NOT the paper's quantity.

Per batch b, the gradient of the batch-MEAN loss is squared; the squares are averaged
over batches; then each parameter is averaged over its first dimension and
broadcast back to its shape. The result depends on the batch size. It exists only to
compare with numbers produced by that code.
"""
from __future__ import annotations

import torch

from ..data import Batch
from .base import Backend


class LegacyBackend(Backend):
    name = "legacy"
    fisher_kinds = ("empirical",)
    distributed = False  # the authors' code is single-process
    per_sample = False  # it squares the mini-batch gradient, whatever the backward does with the batch

    def __init__(self, model, table, *, loss_spec=None, **_):
        super().__init__(model, table)
        self.loss_spec = loss_spec
        self.num_batches = 0

    def accumulate(self, batch: Batch, grads_for) -> None:
        names = list(self.table.params)
        with torch.enable_grad():
            out = self.forward(batch)
            loss = self.loss_spec.per_sample(out, batch.targets).mean()
            grads = torch.autograd.grad(loss, [self.table.params[k] for k in names], allow_unused=True)
        for name, g in zip(names, grads):
            if g is not None:
                g = g.to(self.dtype)
                self.add(name, g * g)
        self.num_batches += 1

    def finish(self, totals, num_samples) -> dict:
        """The authors' averaging: over batches, then over each parameter's first dimension."""
        out = {}
        for name, s in totals.items():
            s = s / max(1, self.num_batches)
            out[name] = s.mean(dim=0, keepdim=True).expand_as(s).clone() if s.dim() else s
        return out
