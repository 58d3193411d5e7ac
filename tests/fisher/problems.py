"""Test problems as data: a model factory, inputs and targets, with a readable id each.

Awkward on purpose: odd sizes, batch of 1, groups, dilation, stride, padding modes,
3-D and 4-D Linear inputs, in-place activations, weight tying, a module called twice,
and modules without a rule mixed with ruled ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Problem:
    id: str
    model: Callable[[], nn.Module]
    data: Callable[[torch.Generator], Tuple[torch.Tensor, torch.Tensor]]
    loss: str = "cross_entropy"

    def build(self, dtype=torch.float64, seed=0):
        torch.manual_seed(seed)
        model = self.model()
        _randomize_stats(model)  # before the cast: float32 and float64 models hold the same numbers
        model = model.to(dtype).eval()
        g = torch.Generator().manual_seed(seed + 1)
        x, y = self.data(g)
        if x.is_floating_point():
            x = x.to(dtype)
        if y.is_floating_point():
            y = y.to(dtype)
        return model, x, y


def _randomize_stats(model: nn.Module) -> None:
    """Give norm layers non-trivial running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
            with torch.no_grad():
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
        for name in ("weight", "bias"):
            p = getattr(m, name, None)
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) and p is not None:
                with torch.no_grad():
                    p.normal_(1.0 if name == "weight" else 0.0, 0.3)


def _cls(n, classes, *shape):
    return lambda g: (torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g))


class Head(nn.Module):
    """Flatten then Linear to ``classes`` logits, lazily sized."""

    def __init__(self, body: nn.Module, features: int, classes: int = 3):
        super().__init__()
        self.body = body
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


class Scaled(nn.Module):
    """A module with its own parameter and a ruled child: the parameter goes to the fallback."""

    def __init__(self, d):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(d))
        self.inner = nn.Linear(d, d)

    def forward(self, x):
        return torch.tanh(self.inner(x)) * self.scale


class Twice(nn.Module):
    """The same Linear used twice in one forward: its per-sample gradients add before the square."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


class Tied(nn.Module):
    """A language-model toy: the embedding table is also the output layer's weight."""

    def __init__(self, vocab=11, d=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.mix = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        h = torch.tanh(self.mix(self.emb(ids))).mean(dim=1)
        return self.out(h)


class EmbedBag(nn.Module):
    def __init__(self, vocab=13, d=5, padding_idx=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=padding_idx)
        self.fc = nn.Linear(d, 3)

    def forward(self, ids):
        return self.fc(torch.tanh(self.emb(ids)).sum(dim=1))


class Attn(nn.Module):
    def __init__(self, e=8, heads=2, batch_first=True, kdim=None, vdim=None, cross=False, mask=False,
                 causal=False, bias=True, add_bias_kv=False):
        super().__init__()
        self.mha = nn.MultiheadAttention(e, heads, batch_first=batch_first, kdim=kdim, vdim=vdim, bias=bias,
                                         add_bias_kv=add_bias_kv)
        self.batch_first, self.cross, self.mask, self.causal = batch_first, cross, mask, causal
        self.kv = nn.Linear(e, kdim or e) if cross else None
        self.vv = nn.Linear(e, vdim or e) if cross else None
        self.fc = nn.Linear(e, 3)

    def forward(self, x):
        q = x if self.batch_first else x.transpose(0, 1)
        k = v = q
        if self.cross:
            k = torch.tanh(self.kv(q))
            v = torch.tanh(self.vv(q))
        kpm = None
        if self.mask:
            kpm = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
            kpm[:, -1] = True
        attn_mask = None
        if self.causal:
            t = x.shape[1]
            attn_mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        out, _ = self.mha(q, k, v, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=False)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.fc(out.mean(dim=1))


class Encoder(nn.Module):
    def __init__(self, d=8, heads=2, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=12, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.fc = nn.Linear(d, 3)

    def forward(self, x):
        return self.fc(self.enc(x).mean(dim=1))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class TwoGRUs(nn.Module):
    """Two stacked GRUs: two fallback units whose outputs are tuples (deferred, summed together)."""

    def __init__(self):
        super().__init__()
        self.rnn1 = nn.GRU(4, 5, batch_first=True)
        self.rnn2 = nn.GRU(5, 3, batch_first=False)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h, _ = self.rnn1(x)
        out, _ = self.rnn2(h.transpose(0, 1))
        return self.fc(out[-1])


class GRUTied(nn.Module):
    """A GRU between an embedding and an output layer that share one table."""

    def __init__(self, vocab=9, d=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.GRU(d, d, batch_first=True)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        h, _ = self.rnn(self.emb(ids))
        return self.out(h[:, -1])


class InplaceResidual(nn.Module):
    """ResNet-style: conv -> BN -> in-place ReLU, and ``out += identity``."""

    def __init__(self, c=3):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c * 25, 3)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        out = self.relu(out)
        return self.fc(out.flatten(1))


def _tanh_head(body_fn, features, classes=3):
    return lambda: Head(nn.Sequential(body_fn(), nn.Tanh()), features, classes)


PROBLEMS = [
    Problem("linear-2d", lambda: nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), _cls(9, 3, 5)),
    Problem("linear-2d-batch1", lambda: nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)),
            _cls(1, 3, 5)),
    Problem("linear-3d", _tanh_head(lambda: nn.Linear(5, 6), 4 * 6), _cls(7, 3, 4, 5)),
    Problem("linear-4d", _tanh_head(lambda: nn.Linear(5, 3, bias=False), 2 * 3 * 3), _cls(6, 3, 2, 3, 5)),
    Problem("conv1d-stride2-dil2-groups", _tanh_head(lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1,
                                                                      dilation=2, groups=2), 6 * 4),
            _cls(5, 3, 4, 9)),
    Problem("conv2d-basic-odd", _tanh_head(lambda: nn.Conv2d(3, 5, 3), 5 * 5 * 3), _cls(7, 3, 3, 7, 5)),
    Problem("conv2d-stride-pad-dil-groups", _tanh_head(
        lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2), 6 * 4 * 5),
        _cls(6, 3, 4, 7, 3)),
    Problem("conv2d-nobias-same-reflect", _tanh_head(
        lambda: nn.Conv2d(3, 4, 4, padding="same", padding_mode="reflect", bias=False), 4 * 6 * 5),
        _cls(5, 3, 3, 6, 5)),
    Problem("conv2d-depthwise-large", _tanh_head(lambda: nn.Conv2d(2, 4, 3, padding=1, groups=2), 4 * 18 * 17),
            _cls(4, 3, 2, 18, 17)),
    Problem("conv3d", _tanh_head(lambda: nn.Conv3d(2, 3, 2, stride=(1, 2, 1)), 3 * 2 * 2 * 3),
            _cls(5, 3, 2, 3, 4, 4)),
    Problem("convtranspose2d-stride-outpad-groups", _tanh_head(
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), 6 * 6 * 8),
        _cls(5, 3, 4, 3, 4)),
    Problem("convtranspose1d", _tanh_head(lambda: nn.ConvTranspose1d(3, 2, 4, stride=3, dilation=2), 2 * 19),
            _cls(4, 3, 3, 5)),
    Problem("batchnorm2d-eval", _tanh_head(lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 4 * 9),
            _cls(6, 3, 3, 5, 5)),
    Problem("batchnorm1d-eval-2d", lambda: nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(),
                                                         nn.Linear(6, 3)), _cls(7, 3, 5)),
    Problem("layernorm-seq", _tanh_head(lambda: nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6)), 3 * 6),
            _cls(6, 3, 3, 5)),
    Problem("layernorm-2dshape", _tanh_head(lambda: nn.LayerNorm((3, 4)), 2 * 3 * 4), _cls(5, 3, 2, 3, 4)),
    Problem("groupnorm", _tanh_head(lambda: nn.Sequential(nn.Conv2d(2, 6, 3), nn.GroupNorm(3, 6)), 6 * 9),
            _cls(5, 3, 2, 5, 5)),
    Problem("instancenorm-affine", _tanh_head(
        lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.InstanceNorm1d(4, affine=True)), 4 * 6), _cls(5, 3, 2, 8)),
    Problem("embedding-repeats-padding", lambda: EmbedBag(padding_idx=2),
            lambda g: (torch.randint(0, 5, (8, 6), generator=g), torch.randint(0, 3, (8,), generator=g))),
    Problem("tied-embedding-output", lambda: Tied(),
            lambda g: (torch.randint(0, 11, (6, 5), generator=g), torch.randint(0, 11, (6,), generator=g))),
    Problem("module-called-twice", lambda: Twice(), _cls(7, 3, 4)),
    Problem("mha-self-batchfirst-padmask", lambda: Attn(mask=True), _cls(5, 3, 4, 8)),
    Problem("mha-seqfirst-causal", lambda: Attn(batch_first=False, causal=True), _cls(4, 3, 5, 8)),
    Problem("mha-cross-kdim-vdim", lambda: Attn(cross=True, kdim=6, vdim=5), _cls(4, 3, 3, 8)),
    Problem("mha-cross-samedim-nobias", lambda: Attn(cross=True, bias=False), _cls(4, 3, 3, 8)),
    Problem("mha-bias-kv-fallback", lambda: Attn(add_bias_kv=True), _cls(4, 3, 3, 8)),
    Problem("transformer-encoder", lambda: Encoder(), _cls(4, 3, 5, 8)),
    Problem("inplace-residual-bn", lambda: InplaceResidual(), _cls(5, 3, 3, 5, 5)),
    Problem("mixed-fallback-own-param", lambda: nn.Sequential(Scaled(5), nn.PReLU(5), nn.Linear(5, 3)),
            _cls(6, 3, 5)),
    Problem("gru-fallback", lambda: Recurrent(), _cls(4, 3, 3, 4)),
    Problem("two-grus", lambda: TwoGRUs(), _cls(4, 3, 3, 4)),
    Problem("gru-tied-embedding", lambda: GRUTied(),
            lambda g: (torch.randint(0, 9, (5, 4), generator=g), torch.randint(0, 9, (5,), generator=g))),
    Problem("mse-regression", lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(),
                                                    nn.Conv2d(2, 1, 3, padding=1)),
            lambda g: (torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)), loss="mse"),
    Problem("bce-multilabel", lambda: nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4)),
            lambda g: (torch.randn(6, 5, generator=g), torch.randint(0, 2, (6, 4), generator=g).float()),
            loss="bce_with_logits"),
]

BY_ID = {p.id: p for p in PROBLEMS}
