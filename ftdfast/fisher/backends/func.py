"""The ``"func"`` backend: whole-model ``torch.func.vmap(grad(...))`` over chunks of samples.

Memory is (chunk_size, P) for the whole model, so keep ``chunk_size`` small for
large models. Useful as an independent check and for models no rule covers.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from ..eval_caches import clear_caches
from ..data import Batch, map_tensors
from ..factors import square_dtype, widen
from ...workspace import chunk_size as workspace_chunk
from .base import Backend, ParamTable


# a phrase of torch.func's error -> what the model does that torch.func cannot transform
_UNTRANSFORMABLE = {
    "data-dependent control flow": "reads a tensor's values in Python control flow (e.g. transformers' "
                                   "attention-mask shortcut when an attention_mask is passed; "
                                   "attn_implementation='eager' avoids it)",
    "saved tensor hooks": "uses saved-tensor hooks (torch.utils.checkpoint with use_reentrant=False, "
                          "activation offloading)",
    "setup_context": "calls an autograd.Function without torch.func support (e.g. torch.utils.checkpoint "
                     "with use_reentrant=True)",
}


class FuncBackend(Backend):
    name = "func"

    def __init__(self, model: nn.Module, table: ParamTable, *, chunk_size: Optional[int] = None, **_):
        super().__init__(model, table)
        self.chunk_size = chunk_size
        self.buffers = dict(model.named_buffers())

    def _inner(self, params, inputs, v):
        inputs = map_tensors(inputs, lambda t: t.unsqueeze(0))
        batch = Batch(0, inputs, v.unsqueeze(0), 1)
        clear_caches(self.caches)  # the swapped-in parameters, not a cached tensor of the real ones
        try:
            out = batch.call(lambda *a, **k: functional_call(self.model, (params, self.buffers), a, k))
        finally:
            clear_caches(self.caches)  # nothing made inside vmap/grad outlives the call
        return (out * v.unsqueeze(0)).sum()

    def accumulate(self, batch: Batch, grads_for) -> None:
        with torch.no_grad():
            out = self.forward(batch)
        params = {k: p.detach() for k, p in self.table.params.items()}
        total = sum(p.numel() for p in params.values())
        step = self.chunk_size or workspace_chunk(2 * total, square_dtype(next(iter(params.values())).dtype))
        fn = vmap(grad(self._inner), in_dims=(None, 0, 0))
        for v in grads_for(out):
            for start in range(0, batch.n, step):
                part = batch.select(start, min(batch.n, start + step))
                with torch.enable_grad():
                    try:
                        g = fn(params, part.inputs, v[start:start + part.n])
                    except RuntimeError as e:
                        why = next((w for key, w in _UNTRANSFORMABLE.items() if key in str(e)), None)
                        if why is None:
                            raise
                        raise RuntimeError(
                            f"backend='func' runs the whole model under torch.func.vmap(grad), and the model's "
                            f"forward {why}, which torch.func cannot transform. Use backend='auto' (per-layer "
                            "rules: the same Fisher)") from e
                for name, gi in g.items():
                    self.add(name, widen(gi).square().sum(dim=0))
