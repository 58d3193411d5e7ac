"""The ``"loop"`` backend: one forward and one backward per sample. Slow and plainly correct.

It shares nothing with the other backends but the definition: for the empirical
Fisher each sample's own loss is differentiated; for ``exact``/``mc`` each sample's
output is back-propagated with its output gradients ``v_kn``. Squares are taken and
summed in the accumulation dtype.
"""
from __future__ import annotations

import torch

from ..data import Batch
from .base import Backend


class LoopBackend(Backend):
    name = "loop"

    def __init__(self, model, table, *, loss_spec=None, fisher="empirical", **_):
        super().__init__(model, table)
        self.loss_spec, self.fisher = loss_spec, fisher

    def accumulate(self, batch: Batch, grads_for) -> None:
        names = list(self.table.params)
        params = [self.table.params[k] for k in names]
        with torch.no_grad():
            out = self.forward(batch)  # shape errors and label checks, once per batch
        pending = grads_for(out)
        vs = None if self.fisher == "empirical" else list(pending)
        for i in range(batch.n):
            one = batch.select(i, i + 1)
            with torch.enable_grad():
                out = self.forward(one)
                if vs is None:
                    loss = self.loss_spec.per_sample(out, one.targets).sum()
                    seeds = [(loss, None)]
                else:
                    seeds = [(out, v[i:i + 1]) for v in vs]
                for k, (root, seed) in enumerate(seeds):
                    grads = torch.autograd.grad(root, params, seed, retain_graph=k < len(seeds) - 1,
                                                allow_unused=True)
                    for name, g in zip(names, grads):
                        if g is not None:
                            g = g.to(self.dtype)
                            self.add(name, g * g)
