"""nn.Embedding: a sample's gradient rows are its output gradients scatter-added over its token ids;
repeated ids within one sample are summed before the square. (``scale_grad_by_freq`` has no per-sample
gradient; ``fisher_diagonal`` refuses it before any rule runs.)"""
from __future__ import annotations

import torch.nn as nn

from ..factors import Scatter
from ..registry import Call, register_rule


@register_rule(nn.Embedding)
def embedding(module: nn.Embedding, call: Call):
    ids, g = call.args[0], call.grad
    if ids.dim() < 1:
        return None
    n = ids.shape[0]
    ids = ids.reshape(n, -1)
    b = g.reshape(n, -1, module.embedding_dim)
    if module.padding_idx is not None:
        b = b * (ids != module.padding_idx).unsqueeze(-1).to(b.dtype)
    return {"weight": Scatter(ids, b, tuple(module.weight.shape))}
