"""nn.MultiheadAttention: the projections are Linear maps over positions, so their per-sample
gradients are ``sum_t b_t a_t^T`` as for Linear. The output gradients of the internal
projections (q, k, v and the input of ``out_proj``) are not visible from outside the
module, so the rule recomputes the attention from the captured inputs and back-propagates
the captured output gradient through it once (one extra attention forward and backward).
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..factors import Outer, PerSample, Stacked, wide_sum
from ..registry import Call, register_rule

_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _as_additive(mask, dtype):
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


def _merged_mask(m: nn.MultiheadAttention, n: int, length: int, src: int, attn_mask, key_padding_mask,
                 is_causal: bool, dtype):
    """An additive mask broadcastable to (n, heads, length, src), as the module applies it."""
    mask = _as_additive(attn_mask, dtype)
    if mask is None and is_causal:
        mask = torch.triu(torch.full((length, src), float("-inf"), dtype=dtype), diagonal=1)
    if mask is not None and mask.dim() == 3:
        mask = mask.view(n, m.num_heads, length, src)
    kpm = _as_additive(key_padding_mask, dtype)
    if kpm is not None:
        kpm = kpm.view(n, 1, 1, src)
        mask = kpm if mask is None else mask + kpm
    return mask


@register_rule(nn.MultiheadAttention, covers_children=True)
def multihead_attention(m: nn.MultiheadAttention, call: Call):
    if m.bias_k is not None or m.add_zero_attn or (m.training and m.dropout > 0):
        return None
    bound = _SIGNATURE.bind(m, *call.args, **call.kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value = a["query"], a["key"], a["value"]
    grads = call.grad if isinstance(call.grad, tuple) else (call.grad,)
    g_out = grads[0]
    if query.dim() != 3 or g_out is None or any(g is not None for g in grads[1:]):
        return None  # unbatched inputs, or a loss that uses the attention weights: fallback
    self_attention = query is key and key is value
    if not m.batch_first:
        query, key, value, g_out = (t.transpose(0, 1) for t in (query, key, value, g_out))
    n, length, e = query.shape
    src = key.shape[1]
    heads, hd = m.num_heads, m.head_dim
    if m._qkv_same_embed_dim:
        wq, wk, wv = m.in_proj_weight.detach().chunk(3)
    else:
        wq, wk, wv = m.q_proj_weight.detach(), m.k_proj_weight.detach(), m.v_proj_weight.detach()
    bq = bk = bv = None
    if m.in_proj_bias is not None:
        bq, bk, bv = m.in_proj_bias.detach().chunk(3)
    mask = _merged_mask(m, n, length, src, a["attn_mask"], a["key_padding_mask"], a["is_causal"], query.dtype)
    with torch.enable_grad():
        q = F.linear(query.detach(), wq, bq).requires_grad_(True)
        k = F.linear(key.detach(), wk, bk).requires_grad_(True)
        v = F.linear(value.detach(), wv, bv).requires_grad_(True)
        qh, kh, vh = (t.view(n, -1, heads, hd).transpose(1, 2) for t in (q, k, v))
        scores = qh @ kh.transpose(-2, -1) / math.sqrt(hd)
        if mask is not None:
            scores = scores + mask
        attn_in = (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2).reshape(n, length, e)
        out = F.linear(attn_in, m.out_proj.weight.detach(), None)
        bq_, bk_, bv_, bo_in = torch.autograd.grad(out, (q, k, v, attn_in), g_out)
    result = {}
    if m._qkv_same_embed_dim:
        if self_attention:
            result["in_proj_weight"] = Outer(query, torch.cat([bq_, bk_, bv_], dim=-1), tuple(m.in_proj_weight.shape))
        else:
            result["in_proj_weight"] = Stacked((Outer(query, bq_, (e, e)), Outer(key, bk_, (e, e)),
                                                Outer(value, bv_, (e, e))))
    else:
        result["q_proj_weight"] = Outer(query, bq_, tuple(m.q_proj_weight.shape))
        result["k_proj_weight"] = Outer(key, bk_, tuple(m.k_proj_weight.shape))
        result["v_proj_weight"] = Outer(value, bv_, tuple(m.v_proj_weight.shape))
    if m.in_proj_bias is not None:
        result["in_proj_bias"] = PerSample(torch.cat([wide_sum(bq_, 1), wide_sum(bk_, 1), wide_sum(bv_, 1)], dim=-1))
    result["out_proj.weight"] = Outer(attn_in.detach(), g_out, tuple(m.out_proj.weight.shape))
    if m.out_proj.bias is not None:
        result["out_proj.bias"] = PerSample(wide_sum(g_out, 1))
    return result
