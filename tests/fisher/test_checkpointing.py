"""Gradient checkpointing: ``use_reentrant=False`` gives the Fisher without checkpointing; ``use_reentrant=True``
(whose backward supports only ``loss.backward()``) is refused with an error naming that fix."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

import ftdfast
from ftdfast.native import _ext

BACKENDS = ["rules", "loop", "loop1"] + (["native"] if _ext.HAS_NATIVE else [])


class Checkpointed(nn.Module):
    """Linear-tanh blocks; ``where`` says which block is checkpointed (the first: no input requires grad)."""

    def __init__(self, where: int, reentrant):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(5, 5), nn.Tanh()) for _ in range(3))
        self.head = nn.Linear(5, 3)
        self.where, self.reentrant = where, reentrant

    def forward(self, x):
        for k, block in enumerate(self.blocks):
            if k == self.where and self.reentrant is not None:
                x = checkpoint(block, x, use_reentrant=self.reentrant)
            else:
                x = block(x)
        return self.head(x)


def build(where, reentrant):
    torch.manual_seed(0)
    model = Checkpointed(where, reentrant).double().eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)


# (id, checkpointed block): the first block's input (the data) requires no grad, the middle one's does
PLACES = [("first_block", 0), ("middle_block", 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("place", PLACES, ids=lambda p: p[0])
def test_non_reentrant_checkpointing_gives_the_plain_fisher(place, backend):
    plain, x, y = build(place[1], None)
    model, _, _ = build(place[1], False)
    want = ftdfast.fisher_diagonal(plain, (x, y), backend=backend, progress=False, batch_size=4)
    got = ftdfast.fisher_diagonal(model, (x, y), backend=backend, progress=False, batch_size=4)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("place", PLACES, ids=lambda p: p[0])
def test_reentrant_checkpointing_is_refused_naming_the_fix(place, backend):
    model, x, y = build(place[1], True)
    with pytest.raises(RuntimeError, match="use_reentrant=True.*Use use_reentrant=False") as info:
        ftdfast.fisher_diagonal(model, (x, y), backend=backend, progress=False)
    assert f"blocks.{place[1]}.0 (Linear)" in str(info.value)
    assert "gradient_checkpointing_kwargs={'use_reentrant': False}" in str(info.value)


@pytest.mark.parametrize("reentrant", [False, True], ids=["use_reentrant_false", "use_reentrant_true"])
def test_func_says_why_it_cannot_run_a_checkpointed_model(reentrant):
    model, x, y = build(1, reentrant)
    with pytest.raises(RuntimeError, match="backend='func' runs the whole model.*checkpoint.*backend='auto'"):
        ftdfast.fisher_diagonal(model, (x, y), backend="func", progress=False)


class CausalLM(nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(input_ids=ids).logits[:, -1]


@pytest.mark.parametrize("reentrant", [False, True], ids=["use_reentrant_false", "use_reentrant_true"])
def test_transformers_gradient_checkpointing(reentrant):
    """transformers checkpoints only in training mode: a GPT-2 without dropout, in train mode."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=31, n_positions=16, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(cfg).double()
    ids = torch.randint(0, 31, (4, 6), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 31, (4,), generator=torch.Generator().manual_seed(2))
    want = ftdfast.fisher_diagonal(CausalLM(lm).train(), (ids, y), progress=False)
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model = CausalLM(lm).train()
    if reentrant:
        with pytest.raises(RuntimeError, match="Use use_reentrant=False"):
            ftdfast.fisher_diagonal(model, (ids, y), progress=False)
        return
    got = ftdfast.fisher_diagonal(model, (ids, y), progress=False)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-9, atol=1e-16)
