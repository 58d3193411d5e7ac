"""transformers' scaled word embeddings (``BartScaledWordEmbedding``, mBART, M2M100, Gemma, ...):
``nn.Embedding`` subclasses returning ``embedding(ids) * embed_scale``. The per-sample gradient is
the embedding's scatter of ``b * embed_scale``. Classes are recognised by their ``forward`` source
(:mod:`._by_source`).
"""
from __future__ import annotations

import torch

from ..registry import Call
from ._by_source import is_transformers_modeling, register_by_forward_source
from ._on_import import when_imported
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


when_imported(is_transformers_modeling, lambda mod: register_by_forward_source(
    mod, {_PLAIN: _rule(False), _CAST: _rule(True)}, ("Embedding",)))
