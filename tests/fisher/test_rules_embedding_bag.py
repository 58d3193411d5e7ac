"""nn.EmbeddingBag in every mode, against the independent float64 per-sample reference (strict: no fallback)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.fisher import fallback

from benchmarks.speed.zoo_reference import fisher_reference, max_relative_errors


class Bags(nn.Module):
    """ids (n, L) with -1 marking absent entries; one bag per sample.

    layout "2d": the (n, L) matrix as is (-1 replaced by ``padding_idx`` or 0);
    "offsets": the present ids flattened to 1-D with offsets (ragged bags, some empty);
    "offsets-last": the same with ``include_last_offset=True``.
    """

    def __init__(self, mode="sum", layout="2d", weighted=False, padding_idx=None, vocab=9, d=4):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, d, mode=mode, padding_idx=padding_idx,
                                   include_last_offset=layout == "offsets-last")
        self.w = nn.Linear(1, 1) if weighted else None  # per-sample weights that depend on a parameter
        self.layout, self.fc = layout, nn.Linear(d, 3)

    def forward(self, ids):
        present = ids >= 0
        psw = None
        if self.w is not None:
            psw = torch.sigmoid(self.w(torch.arange(ids.numel(), dtype=self.fc.weight.dtype).reshape(
                ids.shape + (1,)) / 7.0)).squeeze(-1)
        if self.layout == "2d":
            fill = self.bag.padding_idx if self.bag.padding_idx is not None else 0
            out = self.bag(torch.where(present, ids, torch.full_like(ids, fill)), per_sample_weights=psw)
        else:
            flat = ids[present]
            sizes = present.sum(1)
            offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
            if self.layout == "offsets-last":
                offsets = torch.cat([offsets, sizes.sum().reshape(1)])
            out = self.bag(flat, offsets, per_sample_weights=None if psw is None else psw[present])
        return self.fc(torch.tanh(out))


def _ids(n, length, vocab, g, holes):
    ids = torch.randint(0, vocab, (n, length), generator=g)
    ids[:, 1] = ids[:, 0]  # a repeated id in every bag
    if holes:
        ids[torch.rand(n, length, generator=g) < 0.3] = -1
        ids[0] = -1  # an empty bag
    return ids


CASES = [
    ("sum-2d", dict(mode="sum"), 5, 6, False),
    ("mean-2d", dict(mode="mean"), 4, 5, False),
    ("max-2d", dict(mode="max"), 4, 5, False),
    ("sum-2d-weighted", dict(mode="sum", weighted=True), 3, 4, False),
    ("mean-2d-padding-idx", dict(mode="mean", padding_idx=2), 5, 6, False),
    ("max-2d-padding-idx", dict(mode="max", padding_idx=2), 4, 6, False),
    ("sum-2d-batch1", dict(mode="sum"), 1, 3, False),
    ("sum-offsets-ragged", dict(mode="sum", layout="offsets"), 5, 6, True),
    ("mean-offsets-ragged", dict(mode="mean", layout="offsets"), 5, 6, True),
    ("max-offsets-ragged", dict(mode="max", layout="offsets"), 4, 5, True),
    ("sum-offsets-last-weighted", dict(mode="sum", layout="offsets-last", weighted=True), 4, 5, True),
    ("mean-offsets-padding-idx", dict(mode="mean", layout="offsets", padding_idx=1), 5, 6, True),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_embedding_bag_matches_reference(case):
    _, kwargs, n, length, holes = case
    torch.manual_seed(0)
    model = Bags(**kwargs).double().eval()
    ids = _ids(n, length, 9, torch.Generator().manual_seed(1), holes)
    y = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(2))
    want = fisher_reference(model, ids, y)
    got = ftdfast.fisher_diagonal(model, (ids, y), strict=True, progress=False, batch_size=n)
    errors = max_relative_errors(got, want)
    assert max(errors.values()) <= 1e-10, errors


def test_max_norm_declines_to_the_exact_fallback(monkeypatch):
    """max_norm renormalises the table inside the forward. (scale_grad_by_freq is refused before any rule:
    tests/faults/test_fisher_faults.py.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.EmbeddingBag(7, 3, mode="sum", max_norm=1.0), nn.Linear(3, 2)).double().eval()
    ids = torch.randint(0, 7, (4, 3), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 1, 0])
    want = fisher_reference(model, ids, y)
    monkeypatch.setattr(fallback, "_WARNED", set())  # it warns once per process
    with pytest.warns(UserWarning, match="does not cover this configuration"):
        got = ftdfast.fisher_diagonal(model, (ids, y), progress=False)
    assert max(max_relative_errors(got, want).values()) <= 1e-10
