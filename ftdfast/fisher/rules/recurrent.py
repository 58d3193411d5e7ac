"""nn.LSTM, nn.GRU and nn.RNN: closed forms per time step.

Each layer and direction is a Linear map of its input and of its previous hidden state into
the gate pre-activations, ``gi_t = W_ih x_t + b_ih`` and ``gh_t = W_hh h_{t-1} + b_hh``. So per
sample ``G_{W_ih} = sum_t dgi_t^T x_t`` and ``G_{W_hh} = sum_t dgh_t^T h_{t-1}`` (Linear factors
over the T positions), and the biases are ``sum_t dgi_t`` and ``sum_t dgh_t``. (For a GRU, dgh
differs from dgi in its candidate rows: ``n_t = tanh(gi_n + r_t * gh_n)``; for an LSTM or RNN the
cell sees ``gi_t + gh_t`` only, so ``dgh_t = dgi_t``.)

The gate gradients are not visible from outside the module, so the rule recomputes the
recurrence from the captured input and initial state in plain tensor operations and
back-propagates the captured output gradients (of the output sequence and of the final
states) through it once: one extra forward and backward of the module, step by step.
Declined (the exact torch.func fallback then runs): packed sequences, unbatched inputs, LSTM
``proj_size``, and dropout between layers in training mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..factors import Outer, PerSample, wide_sum
from ..registry import Call, register_rule

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _step(mode: str, gi, gh, h, c):
    """One time step from the gate pre-activations: the new (h, c) (c is None except for an LSTM)."""
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "GRU":
        ir, iz, in_ = gi.chunk(3, dim=1)
        hr, hz, hn = gh.chunk(3, dim=1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    pre = gi + gh
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


def _initial_states(m: nn.RNNBase, hx, n: int, like: torch.Tensor):
    """h0 (and c0) as (layers * directions, n, hidden), zeros where not given."""
    shape = (m.num_layers * (2 if m.bidirectional else 1), n, m.hidden_size)
    zeros = lambda: like.new_zeros(shape)  # noqa: E731
    if m.mode == "LSTM":
        h0, c0 = hx if hx is not None else (zeros(), zeros())
        return h0.detach(), c0.detach()
    return (hx.detach() if hx is not None else zeros()), None


@register_rule(nn.LSTM, nn.GRU, nn.RNN)
def recurrent(m: nn.RNNBase, call: Call):
    x = call.args[0] if call.args else call.kwargs.get("input")
    hx = call.args[1] if len(call.args) > 1 else call.kwargs.get("hx")
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or getattr(m, "proj_size", 0) \
            or (m.training and m.dropout > 0 and m.num_layers > 1) or m.mode not in _GATES:
        return None
    grads = call.grad if isinstance(call.grad, tuple) else (call.grad,)
    xs = (x if m.batch_first else x.transpose(0, 1)).detach()  # (n, t, i)
    n, steps = xs.shape[:2]
    dirs = 2 if m.bidirectional else 1
    h0, c0 = _initial_states(m, hx, n, xs)
    layers = []  # per (layer, direction): suffix, layer input, gi, [gh_t], [h_{t-1}]
    finals_h, finals_c = [], []
    with torch.enable_grad():
        # leaves that require grad, so that every gate pre-activation is part of the graph
        layer_in = xs.clone().requires_grad_(True)
        h0 = h0.clone().requires_grad_(True)
        c0 = None if c0 is None else c0.clone().requires_grad_(True)
        for layer in range(m.num_layers):
            outs = []
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(m, "weight_ih" + sfx).detach(), getattr(m, "weight_hh" + sfx).detach()
                b_ih = getattr(m, "bias_ih" + sfx).detach() if m.bias else None
                b_hh = getattr(m, "bias_hh" + sfx).detach() if m.bias else None
                gi = F.linear(layer_in, w_ih, b_ih)  # (n, t, gates * hidden)
                h, c = h0[layer * dirs + d], None if c0 is None else c0[layer * dirs + d]
                gh, prev, hs = [None] * steps, [None] * steps, [None] * steps
                for t in (range(steps - 1, -1, -1) if d else range(steps)):
                    prev[t] = h
                    gh[t] = F.linear(h, w_hh, b_hh)
                    h, c = _step(m.mode, gi[:, t], gh[t], h, c)
                    hs[t] = h
                outs.append(torch.stack(hs, dim=1))
                finals_h.append(h)
                finals_c.append(c)
                layers.append((sfx, layer_in, gi, gh, prev))
            layer_in = torch.cat(outs, dim=2) if dirs == 2 else outs[0]
        results = [layer_in if m.batch_first else layer_in.transpose(0, 1), torch.stack(finals_h)]
        if m.mode == "LSTM":
            results.append(torch.stack(finals_c))
        pairs = [(r, g) for r, g in zip(results, grads) if g is not None]
        if not pairs:
            return None
        separate = m.mode == "GRU"  # elsewhere the cell sees gi + gh only, so dgh_t = dgi_t
        wrt = [gi for _, _, gi, _, _ in layers] + ([g for _, _, _, gh, _ in layers for g in gh] if separate else [])
        found = torch.autograd.grad([r for r, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
    found = [torch.zeros_like(w) if f is None else f for f, w in zip(found, wrt)]
    d_gi, d_gh = found[:len(layers)], found[len(layers):]
    out = {}
    for k, (sfx, layer_in, gi, gh, prev) in enumerate(layers):
        dgi = d_gi[k]  # (n, t, gates * hidden)
        dgh = torch.stack(d_gh[k * steps:(k + 1) * steps], dim=1) if separate else dgi
        h_prev = torch.stack(prev, dim=1).detach()
        out["weight_ih" + sfx] = Outer(layer_in.detach(), dgi, tuple(gi.shape[2:]) + (layer_in.shape[2],))
        out["weight_hh" + sfx] = Outer(h_prev, dgh, (dgh.shape[2], h_prev.shape[2]))
        if m.bias:
            out["bias_ih" + sfx] = PerSample(wide_sum(dgi, 1))
            out["bias_hh" + sfx] = PerSample(wide_sum(dgh, 1))
    return out
