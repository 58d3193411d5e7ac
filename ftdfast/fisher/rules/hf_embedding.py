"""transformers' scaled word embeddings (``BartScaledWordEmbedding``, mBART, M2M100, Gemma, ...):
``nn.Embedding`` subclasses returning ``embedding(ids) * embed_scale``. The per-sample gradient is
the embedding's scatter of ``b * embed_scale``. Classes are recognised by their ``forward`` source
(:mod:`._by_source`).
"""
from __future__ import annotations

import torch

from ..registry import Call, register_rule_provider
from ._by_source import forward_source_provider
from .embedding import embedding

_PLAIN = """
def forward(self, input_ids: torch.Tensor):
    return super().forward(input_ids) * self.embed_scale
"""

_CAST = """
def forward(self, input_ids: torch.Tensor):
    return super().forward(input_ids) * self.embed_scale.to(self.weight.dtype)
"""


def _rule(cast: bool):
    def scaled_embedding(module, call: Call):
        scale = module.embed_scale
        if isinstance(scale, torch.Tensor):
            if scale.numel() != 1:
                return None
            scale = scale.to(module.weight.dtype) if cast else scale
        return embedding(module, Call(call.args, call.kwargs, call.output, grad=call.grad * scale))
    return scaled_embedding


register_rule_provider(forward_source_provider({_PLAIN: _rule(False), _CAST: _rule(True)}, ("Embedding",)))
