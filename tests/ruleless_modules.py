"""Module types no built-in Fisher rule knows, shared by the tests of the fallback, the registry and
``ftdfast.check``: the fallback covers them unless a test registers a rule."""
from __future__ import annotations

import torch
import torch.nn as nn


class Gate(nn.Module):
    """``x * sigmoid(w)``, w of shape (d,): one parameter, an elementwise gate over the last dimension."""

    def __init__(self, d=4):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def forward(self, x):
        return x * torch.sigmoid(self.w)
