"""How much temporary memory per-sample work may use: ``FTDFAST_WORKSPACE_MB`` (default 16)."""
from __future__ import annotations

import os

import torch


def workspace_elements(dtype: torch.dtype) -> int:
    """How many elements of ``dtype`` a temporary per-sample block may hold."""
    mb = float(os.environ.get("FTDFAST_WORKSPACE_MB", "16"))
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1, int(mb * 2**20) // itemsize)


def chunk_size(per_sample_elements: int, dtype: torch.dtype) -> int:
    """Samples per chunk so that a (chunk, per_sample_elements) block fits the workspace."""
    return max(1, workspace_elements(dtype) // max(1, per_sample_elements))
