"""The reference backends: one backward per sample. Slow and plainly correct.

They share nothing with the other backends but the definition: for the empirical
Fisher each sample's own loss is differentiated (a row's, or a label token's where each
token is a sample); for ``exact``/``mc`` each sample's
output is back-propagated with its output gradients ``v_kn``. Squares are taken and
summed in the accumulation dtype.

- ``"loop"`` (:class:`LoopBackend`, the oracle): ONE batched forward, then one
  ``torch.autograd.grad(losses[n], params, retain_graph=True)`` per sample (for
  ``exact``/``mc``: per sample and output gradient). The model runs as it does on
  any batch, so a kernel that misbehaves on a batch of one cannot creep in.
- ``"loop1"`` (:class:`SingleSampleLoopBackend`, a second reference): a forward and a
  backward per sample, each sample a batch of one. torch 2.14.1's CPU autograd gives
  a wrong BatchNorm2d (eval) bias gradient for a batch of one whose incoming
  gradient is channels-last strided (see ``docs/known-issues.md``), so it can differ
  from ``"loop"`` there; elsewhere the two agree to rounding.
"""
from __future__ import annotations

import torch

from ..data import Batch
from .base import Backend


class _PerSampleBackward(Backend):
    def __init__(self, model, table, *, loss_spec=None, fisher="empirical", **_):
        super().__init__(model, table)
        self.loss_spec, self.fisher = loss_spec, fisher
        self.names = list(table.params)
        self.tensors = [table.params[k] for k in self.names]

    def _add_grads(self, root, seed, retain: bool) -> None:
        grads = torch.autograd.grad(root, self.tensors, seed, retain_graph=retain, allow_unused=True)
        for name, g in zip(self.names, grads):
            if g is not None:
                g = g.to(self.dtype)
                self.add(name, g * g)


class LoopBackend(_PerSampleBackward):
    name = "loop"

    def accumulate(self, batch: Batch, grads_for) -> None:
        with torch.enable_grad():
            out = self.forward(batch)
            vs = list(grads_for(out))  # label checks, and the output gradients of exact/mc
            if self.fisher == "empirical":
                losses = self.loss_spec.per_sample(out, batch.targets)  # one per sample: a row or a label token
                for i in range(losses.shape[0]):
                    self._add_grads(losses[i], None, retain=i < losses.shape[0] - 1)
                return
            for k, v in enumerate(vs):
                for i in range(batch.n):
                    seed = torch.zeros_like(v)
                    seed[i] = v[i]
                    self._add_grads(out, seed, retain=k < len(vs) - 1 or i < batch.n - 1)


class SingleSampleLoopBackend(_PerSampleBackward):
    name = "loop1"

    def accumulate(self, batch: Batch, grads_for) -> None:
        with torch.no_grad():
            out = self.forward(batch)  # shape errors and label checks, once per batch
        vs = None if self.fisher == "empirical" else list(grads_for(out))
        if vs is None:
            grads_for(out)
        for i in range(batch.n):
            one = batch.select(i, i + 1)
            with torch.enable_grad():
                out = self.forward(one)
                if vs is None:  # each of the row's samples (one, or its label tokens) on its own
                    seeds = [(loss, None) for loss in self.loss_spec.per_sample(out, one.targets)]
                else:
                    seeds = [(out, v[i:i + 1]) for v in vs]
                for k, (root, seed) in enumerate(seeds):
                    self._add_grads(root, seed, retain=k < len(seeds) - 1)
