"""The LSTM/GRU/RNN rule against the independent float64 per-sample reference (strict: no fallback)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.fisher import fallback
from ftdfast.fisher.registry import find_rule

from benchmarks.speed.zoo_reference import fisher_reference, max_relative_errors


class Net(nn.Module):
    """x (n, t, 3) -> an RNN -> logits from ``readout``: "last" output position, "h" final hidden state(s),
    "both" (output mean + final states, and the LSTM cell state). ``h0``: an initial state that depends
    on the input through a Linear (so its value differs per sample)."""

    def __init__(self, kind="gru", readout="last", h0=False, batch_first=True, **kw):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.rnn = cls(3, 4, batch_first=batch_first, **kw)
        self.kind, self.readout, self.batch_first = kind, readout, batch_first
        states = self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)
        self.h0 = nn.Linear(3, states * 4) if h0 else None
        width = 4 * (2 if self.rnn.bidirectional else 1)
        self.fc = nn.Linear(width if readout == "last" else 4 * states + (width if readout == "both" else 0)
                            + (4 * states if readout == "both" and kind == "lstm" else 0), 3)

    def forward(self, x):
        n = x.shape[0]
        hx = None
        if self.h0 is not None:
            h = torch.tanh(self.h0(x[:, 0])).reshape(n, -1, 4).transpose(0, 1).contiguous()
            hx = (h, torch.zeros_like(h) + 0.1) if self.kind == "lstm" else h
        seq = x if self.batch_first else x.transpose(0, 1)
        out, state = self.rnn(seq, hx)
        out = out if self.batch_first else out.transpose(0, 1)
        h, c = state if self.kind == "lstm" else (state, None)
        flat_h = h.transpose(0, 1).reshape(n, -1)
        if self.readout == "last":
            return self.fc(out[:, -1])
        if self.readout == "h":
            return self.fc(flat_h)
        parts = [out.mean(1), flat_h] + ([c.transpose(0, 1).reshape(n, -1)] if c is not None else [])
        return self.fc(torch.cat(parts, dim=1))


CASES = [
    ("gru-1layer", dict(kind="gru"), 5, 6),
    ("gru-2layer-bidir", dict(kind="gru", num_layers=2, bidirectional=True), 4, 5),
    ("gru-seq-first-h0-readout-h", dict(kind="gru", batch_first=False, h0=True, readout="h"), 4, 5),
    ("gru-nobias-batch1", dict(kind="gru", bias=False), 1, 4),
    ("lstm-1layer", dict(kind="lstm"), 5, 6),
    ("lstm-3layer-bidir-both", dict(kind="lstm", num_layers=3, bidirectional=True, readout="both"), 3, 4),
    ("lstm-h0-c0-seq-first", dict(kind="lstm", h0=True, batch_first=False, readout="both"), 4, 5),
    ("lstm-length1", dict(kind="lstm", num_layers=2), 3, 1),
    ("rnn-tanh-bidir", dict(kind="rnn", bidirectional=True), 4, 5),
    ("rnn-relu-2layer-h", dict(kind="rnn", nonlinearity="relu", num_layers=2, readout="h"), 4, 5),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_recurrent_rule_matches_reference(case):
    _, kwargs, n, steps = case
    torch.manual_seed(0)
    model = Net(**kwargs).double().eval()
    assert find_rule(model.rnn) is not None
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, steps, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    want = fisher_reference(model, x, y)
    got = ftdfast.fisher_diagonal(model, (x, y), strict=True, progress=False)
    errors = max_relative_errors(got, want)
    assert max(errors.values()) <= 1e-10, errors


def test_float32_model_is_close_to_the_float64_reference():
    torch.manual_seed(0)
    model = Net(kind="lstm", num_layers=2, bidirectional=True).eval()
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1])
    want = fisher_reference(model.double(), x.double(), y)
    got = ftdfast.fisher_diagonal(model.float(), (x, y), strict=True, progress=False)
    assert max(max_relative_errors(got, want).values()) <= 2e-5


def test_lstm_projection_declines_to_the_exact_fallback(monkeypatch):
    torch.manual_seed(0)
    model = Net(kind="lstm", proj_size=2).double().eval()
    model.fc = nn.Linear(2, 3).double()
    x = torch.randn(3, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2, 1])
    want = fisher_reference(model, x, y)
    monkeypatch.setattr(fallback, "_WARNED", set())  # it warns once per process
    with pytest.warns(UserWarning, match="does not cover this configuration"):
        got = ftdfast.fisher_diagonal(model, (x, y), progress=False)
    assert max(max_relative_errors(got, want).values()) <= 1e-10
