"""RMS norms of third-party libraries: ``y = weight * x_hat`` with ``x_hat = x / sqrt(mean(x^2) + eps)``
over the last dimension, so per sample ``G_weight = sum over positions of b * x_hat``.

``x_hat`` is recomputed with each class's own dtype casts, which differ:

- transformers' LLaMA-style norm (``LlamaRMSNorm`` and the ~140 classes with the same
  ``forward``, e.g. Mistral, Qwen2/3): ``x_hat`` is computed in float32 and cast back to the
  input's dtype, also for a float64 model;
- transformers' T5-style norm (``T5LayerNorm``, ``Pix2StructLayerNorm``): only the variance is
  computed in float32; ``x_hat`` stays in the input's dtype (cast to a half-precision weight's
  dtype);
- timm's ``RmsNorm``: in the input's dtype (``F.rms_norm`` on the fast path).

transformers defines one copy of its norm class per model file, so a class is recognised by
the source of its ``forward`` (:mod:`._by_source`): a class that computes something else
(Gemma's ``1 + weight``) does not match and keeps the fallback.
"""
from __future__ import annotations

import sys

import torch

from ..registry import Call, register_lazy_rule, register_rule_provider
from ._by_source import forward_source_provider
from .norm import _affine

_LLAMA_FORWARD = """
def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states.to(input_dtype)
"""

_T5_FORWARD_CODE = """
def forward(self, hidden_states):
    variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    if self.weight.dtype in [torch.float16, torch.bfloat16]:
        hidden_states = hidden_states.to(self.weight.dtype)
    return self.weight * hidden_states
"""


def _rows(module, call: Call):
    x, g = call.args[0] if call.args else call.kwargs.get("hidden_states"), call.grad
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or module.weight.dim() != 1 \
            or x.shape[-1] != module.weight.shape[0]:
        return None, None
    return x, g


def llama_rms_norm(module, call: Call):
    x, g = _rows(module, call)
    if x is None:
        return None
    h = x.to(torch.float32)
    x_hat = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)).to(x.dtype)
    return _affine(module, x_hat, g, -1)


def t5_layer_norm(module, call: Call):
    x, g = _rows(module, call)
    if x is None:
        return None
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    x_hat = x * torch.rsqrt(variance + module.variance_epsilon)
    if module.weight.dtype in (torch.float16, torch.bfloat16):
        x_hat = x_hat.to(module.weight.dtype)
    return _affine(module, x_hat, g, -1)


@register_lazy_rule("timm.layers.norm.RmsNorm")
def timm_rms_norm(module, call: Call):
    x, g = call.args[0], call.grad
    shape = tuple(module.normalized_shape)
    fast = sys.modules.get("timm.layers.fast_norm")
    if module.weight is None or x.dim() <= len(shape) or fast is None:
        return None
    if module._fast_norm:
        if getattr(fast, "has_apex_rmsnorm", False):
            return None  # apex's fused kernel
        x_hat = fast.fast_rms_norm(x, list(shape), None, module.eps)
    else:
        x_hat = fast.rms_norm(x, list(shape), None, module.eps)
    return _affine(module, x_hat, g, -1)


register_rule_provider(forward_source_provider({_LLAMA_FORWARD: llama_rms_norm, _T5_FORWARD_CODE: t5_layer_norm},
                                               ("RMSNorm", "LayerNorm")))
