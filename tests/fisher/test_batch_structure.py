"""Modules whose calls do not carry the batch's samples on the batch dimension, and fallbacks that bypass
functional_call: each reproduced with a small self-built module, against the float64 oracle.

Tolerance: float64, per parameter, relative to the model's largest Fisher entry: 1e-9.
"""
import warnings

import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.native import _ext
from ftdfast.fisher import fallback

RTOL = 1e-9


def assert_exact(got, want):
    scale = max(float(v.abs().max()) for v in want.values())
    assert scale > 0
    assert list(got) == list(want)
    for name in want:
        err = float((got[name] - want[name]).abs().max())
        assert err <= RTOL * scale, f"{name}: error {err:.3g} vs largest entry {scale:.3g}"


def compare(model, x, y, backends=("rules", "auto"), **kw):
    kw.setdefault("progress", False)
    want = ftdfast.fisher_diagonal(model, (x, y), backend="loop", **kw)
    for backend in backends:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = ftdfast.fisher_diagonal(model, (x, y), backend=backend, **kw)
        assert_exact(got, want)
    return want


class PositionTable(nn.Module):
    """GPT-2 style: ``wpe(arange(T)[None])`` is (1, T, d) and broadcast over the batch."""

    def __init__(self, vocab=7, positions=9, d=4, classes=3):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d)
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, classes)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)[None]  # (1, T)
        h = torch.tanh(self.ln(self.wte(ids) + self.wpe(pos)))
        return self.fc(h[:, -1])


class NoBatchBias(nn.Module):
    """T5 style: a bias table looked up with (q, k) bucket ids (no batch dimension), added to (n, q, k) scores."""

    def __init__(self, t=5, d=4, classes=3):
        super().__init__()
        self.bias = nn.Embedding(2 * t, 1)
        self.proj = nn.Linear(d, d)
        self.fc = nn.Linear(d, classes)
        self.t = t

    def forward(self, x):
        t = x.shape[1]
        rel = torch.arange(t)[None, :] - torch.arange(t)[:, None] + self.t  # (q, k)
        h = self.proj(x)
        scores = h @ h.transpose(1, 2) + self.bias(rel).squeeze(-1)  # (n, q, k) + (q, k)
        return self.fc(torch.softmax(scores, -1) @ x).mean(1)


class ExpandedToken(nn.Module):
    """ViT style: a class token ``expand``ed over the batch and a (1, T, d) position tensor added,
    owned by a module that has no rule, with ruled children."""

    def __init__(self, t=3, d=4, classes=3):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, t + 1, d))
        self.gamma = nn.Parameter(torch.randn(d))
        self.embed = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], dim=1) + self.pos
        h = h + self.gamma * torch.tanh(h)
        return self.head(h[:, 0])


class Folded(nn.Module):
    """MobileViT / LeViT style: the batch folded with the patches, ``x.reshape(B * P, ...)``, through ruled layers."""

    def __init__(self, p=3, t=2, d=4, classes=3):
        super().__init__()
        self.p, self.t = p, t
        self.lin = nn.Linear(d, d)
        self.bn = nn.BatchNorm1d(d)
        self.fc = nn.Linear(p * t * d, classes)

    def forward(self, x):  # x: (B, P, T, d)
        b = x.shape[0]
        h = torch.tanh(self.lin(x.reshape(b * self.p, self.t, -1)))  # rows: (sample, patch) pairs
        h = self.bn(h.flatten(0, 1)).reshape(b, -1)  # BatchNorm1d on (B * P * T, d)
        return self.fc(h)


class CachedBias(nn.Module):
    """timm LeViT / EfficientFormer style: in eval mode the first forward caches ``biases[:, idx]`` (with its
    graph to ``biases``) and later forwards read the cache, so ``functional_call`` cannot swap the parameter."""

    def __init__(self, heads=2, t=4):
        super().__init__()
        self.biases = nn.Parameter(torch.randn(heads, 2 * t))
        self.register_buffer("idx", (torch.arange(t)[None, :] - torch.arange(t)[:, None]).abs(), persistent=False)
        self.cache = {}

    def train(self, mode=True):
        super().train(mode)
        self.cache = {}
        return self

    def get_bias(self):
        if self.training:
            return self.biases[:, self.idx]
        if "bias" not in self.cache:
            self.cache["bias"] = self.biases[:, self.idx]
        return self.cache["bias"]

    def forward(self, scores):  # (n, heads, t, t)
        return torch.softmax(scores + self.get_bias(), dim=-1)


class CachedModel(nn.Module):
    def __init__(self, heads=2, t=4, d=3, classes=3):
        super().__init__()
        self.q = nn.Linear(d, heads * d)
        self.att = CachedBias(heads, t)
        self.fc = nn.Linear(heads * t * t, classes)
        self.heads = heads

    def forward(self, x):
        n, t, d = x.shape
        q = self.q(x).view(n, t, self.heads, d).transpose(1, 2)
        return self.fc(self.att(q @ q.transpose(-1, -2)).flatten(1))


def _ids(n, t, vocab, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, t), generator=g), torch.randint(0, classes, (n,), generator=g)


def _float(n, shape, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("n,t", [(4, 6), (5, 5), (1, 3)], ids=["n4-t6", "n-equals-t", "batch1"])
def test_broadcast_position_embedding(n, t):
    torch.manual_seed(0)
    model = PositionTable().double().eval()
    x, y = _ids(n, t, 7, 3)
    compare(model, x, y, batch_size=n)


def test_broadcast_position_embedding_is_caught_per_call():
    """The rule alone would square the batch sum for wpe: the result must differ from that."""
    torch.manual_seed(0)
    model = PositionTable().double().eval()
    x, y = _ids(6, 5, 7, 3)
    got = ftdfast.fisher_diagonal(model, (x, y), backend="rules", progress=False)
    want = ftdfast.fisher_diagonal(model, (x, y), backend="loop", progress=False)
    # the batch-sum square (what a per-sample rule sees with one "sample") is N times too big at least somewhere
    grads = [torch.autograd.grad(nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), model.wpe.weight)[0]
             for i in range(6)]
    wrong = sum(grads).square() / 6
    assert float((wrong - want["wpe.weight"]).abs().max()) > 1e-3 * float(want["wpe.weight"].abs().max())
    assert_exact(got, want)


class RowRead(nn.Module):
    """A size-1 output that is NOT broadcast over the samples: row 0 is read and added to every sample.
    Expanding it to the samples would send every sample's gradient to row 0: it must take the exact path."""

    def __init__(self, d=4, classes=3):
        super().__init__()
        self.table = nn.Embedding(3, d)
        self.fc = nn.Linear(d, classes)

    def forward(self, x):
        t = self.table(torch.zeros(1, 1, dtype=torch.long))  # (1, 1, d)
        return self.fc(torch.tanh(x + t[0, 0]))


def _exact_path_calls(monkeypatch):
    from ftdfast.fisher.backends import exact
    used = []
    real = exact.exact_square_sums
    monkeypatch.setattr("ftdfast.fisher.backends.hooks.exact_square_sums",
                        lambda out, v, params, *a: used.append(sorted(params)) or real(out, v, params, *a))
    return used


def test_broadcast_output_is_expanded_not_sent_to_the_exact_path(monkeypatch):
    used = _exact_path_calls(monkeypatch)
    torch.manual_seed(0)
    model = PositionTable().double().eval()
    x, y = _ids(6, 5, 7, 3)
    compare(model, x, y, backends=("rules",), batch_size=4)
    assert not used


def test_size_one_output_read_per_row_takes_the_exact_path(monkeypatch):
    used = _exact_path_calls(monkeypatch)
    torch.manual_seed(0)
    model = RowRead().double().eval()
    x, y = _float(5, (4,), 3)
    compare(model, x, y, backends=("rules",))
    assert used and all(names == ["table.weight"] for names in used)


def test_bias_without_batch_dimension():
    torch.manual_seed(0)
    model = NoBatchBias().double().eval()
    x, y = _float(5, (5, 4), 3)  # q == k == n: sizes coincide on purpose
    compare(model, x, y)
    x, y = _float(3, (5, 4), 3)
    compare(model, x, y)


@pytest.mark.parametrize("exact_kind", ["empirical", "exact"])
def test_expanded_parameters(exact_kind):
    torch.manual_seed(0)
    model = ExpandedToken().double().eval()
    x, y = _float(5, (3, 4), 3)
    compare(model, x, y, fisher=exact_kind)


@pytest.mark.parametrize("batch_size", [2, 5], ids=["batches-2-2-1", "one-batch"])
def test_raw_parameters_leave_the_fallback_after_the_first_batch(batch_size, monkeypatch):
    """cls.expand / x + pos / gamma * h of a module with ruled children: the first batch runs the fallback beside
    the per-use path (backends.raw); where they agree, later batches and later calls skip the fallback."""
    from ftdfast.fisher.backends import hooks
    calls = []
    real = hooks.fallback_factors
    monkeypatch.setattr(hooks, "fallback_factors", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = ExpandedToken().double().eval()
    x, y = _float(5, (3, 4), 3)
    want = ftdfast.fisher_diagonal(model, (x, y), backend="loop", progress=False)
    for fisher_kind in ("empirical", "exact"):
        if fisher_kind == "exact":
            want = ftdfast.fisher_diagonal(model, (x, y), backend="loop", fisher="exact", progress=False)
        for repeat in range(2):
            calls.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = ftdfast.fisher_diagonal(model, (x, y), backend="rules", batch_size=batch_size,
                                              fisher=fisher_kind, progress=False)
            assert_exact(got, want)
            first_call = fisher_kind == "empirical" and repeat == 0
            assert bool(calls) == first_call  # the fallback ran in the very first batch only


def test_folded_batch():
    torch.manual_seed(0)
    model = Folded().double()
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.normal_(1, 0.3)
    model.eval()
    x, y = _float(4, (3, 2, 4), 3)
    compare(model, x, y, batch_size=3)  # batches of 3 and 1


def test_cached_parameter_derived_tensor_in_eval_mode(monkeypatch):
    monkeypatch.setattr(fallback, "_WARNED", set())

    def build():  # a fresh model per call: the oracle's last backward frees the cached tensor's graph
        torch.manual_seed(0)
        return CachedModel().double().eval()

    x, y = _float(5, (4, 3), 3)
    want = ftdfast.fisher_diagonal(build(), (x, y), backend="loop", progress=False)
    assert float(want["att.biases"].abs().max()) > 0
    with pytest.warns(UserWarning, match=r"att \(CachedBias\).*add up to a sum that differs"):
        got = ftdfast.fisher_diagonal(build(), (x, y), backend="rules", batch_size=2, progress=False)
    assert_exact(got, want)


@pytest.mark.parametrize("pid", ["two-grus", "gru-tied-embedding"])
def test_deferred_fallback_units_together(pid):
    """Two GRUs (two fallback units with tuple outputs) or a GRU beside tied embeddings used to raise
    KeyError: FuncGrad in squares.sum_of_squares."""
    from .problems import BY_ID
    model, x, y = BY_ID[pid].build(torch.float64)
    compare(model, x, y, backends=("rules",), batch_size=3)


def test_loop_references_agree():
    """The batched-forward oracle and the batch-of-one loop agree where no kernel misbehaves."""
    from .problems import BY_ID
    model, x, y = BY_ID["mha-seqfirst-causal"].build(torch.float64)
    a = ftdfast.fisher_diagonal(model, (x, y), backend="loop", progress=False)
    b = ftdfast.fisher_diagonal(model, (x, y), backend="loop1", progress=False)
    assert_exact(a, b)
    c = ftdfast.fisher_diagonal(model, (x, y), backend="loop", fisher="exact", progress=False)
    d = ftdfast.fisher_diagonal(model, (x, y), backend="loop1", fisher="exact", progress=False)
    assert_exact(c, d)


def test_gpt2_position_embedding(monkeypatch):
    """The reproduction of issue 11: wpe(position_ids of shape (1, T)) is broadcast over the batch."""
    transformers = pytest.importorskip("transformers")
    used = _exact_path_calls(monkeypatch)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    m = transformers.GPT2LMHeadModel(cfg).double().eval()

    class W(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(input_ids=x).logits[:, -1]

    x, y = _ids(4, 8, 50, 50)
    compare(W(m), x, y, backends=("rules",))
    assert not used  # wpe's output is expanded to the samples; its Embedding rule then applies



class ChannelsLastStem(nn.Module):
    """LeViT's stem: conv -> BatchNorm2d (eval) -> ``flatten(2).transpose(1, 2)``, a copy, a residual block. In a batch of one the
    gradient reaching the BatchNorm has strides (C, 1, W*C, C), where torch 2.14.1's CPU BatchNorm backward is wrong
    (docs/known-issues.md)."""

    def __init__(self, c=3, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(2, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.mix = nn.Linear(c, c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = self.bn(self.conv(x)).flatten(2).transpose(1, 2).contiguous()  # (n, t, c)
        h = h + torch.tanh(self.mix(h))  # a residual block, as LeViT's stages start
        return self.fc(h).mean(1)


def test_batch_of_one_through_a_channels_last_batchnorm_gradient():
    torch.manual_seed(0)
    model = ChannelsLastStem().double()
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.normal_(1, 0.3)
        model.bn.bias.normal_(0, 0.3)
    model.eval()
    x, y = _float(4, (2, 4, 4), 3)
    want = ftdfast.fisher_diagonal(model, (x, y), backend="loop", progress=False)  # batched forward
    for backend in ("rules", "auto"):
        got = ftdfast.fisher_diagonal(model, (x, y), backend=backend, batch_size=1, progress=False)
        assert_exact(got, want)


@pytest.mark.parametrize("pid", ["gru-fallback", "mixed-fallback-own-param", "two-grus", "mha-bias-kv-fallback"])
def test_the_fallback_guard_passes_plain_fallback_modules(pid, monkeypatch):
    """No false alarm: modules that read their parameters normally stay on the fallback (no exact path)."""
    from ftdfast.fisher.backends import exact
    from .problems import BY_ID
    used = []
    real = exact.exact_square_sums
    monkeypatch.setattr("ftdfast.fisher.backends.hooks.exact_square_sums",
                        lambda *a, **k: used.append(1) or real(*a, **k))
    model, x, y = BY_ID[pid].build(torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ftdfast.fisher_diagonal(model, (x, y), backend="rules", progress=False)
    assert not [w for w in caught if "add up" in str(w.message)]
    assert not used


def test_the_exact_path_names_its_parameters_and_why():
    torch.manual_seed(0)
    model = Folded().double().eval()
    x, y = _float(4, (3, 2, 4), 3)
    with pytest.warns(UserWarning, match=r"exact per-sample backwards \(slower\) for bn.bias: bn \(BatchNorm1d\), run "
                                         r"on samples 0 and 1 alone: its output 0 has shape \(12, 4\), without the 2 "
                                         r"samples on dimension 0"):
        ftdfast.fisher_diagonal(model, (x, y), backend="rules", progress=False)


class TimmCachedBias(CachedBias):
    """The same cache under timm's attribute name, ``attention_bias_cache``, which ftdfast knows and empties."""

    def __init__(self, heads=2, t=4):
        super().__init__(heads, t)
        del self.cache
        self.attention_bias_cache = {}

    def train(self, mode=True):
        nn.Module.train(self, mode)
        self.attention_bias_cache = {}
        return self

    def get_bias(self):
        if self.training:
            return self.biases[:, self.idx]
        if "bias" not in self.attention_bias_cache:
            self.attention_bias_cache["bias"] = self.biases[:, self.idx]
        return self.attention_bias_cache["bias"]


@pytest.mark.parametrize("backend", ["rules", "native", "func", "loop", "loop1"])
def test_known_eval_cache_made_under_no_grad_is_bypassed(backend):
    """An evaluation pass under no_grad before the Fisher (the usual order) fills timm's attention_bias_cache
    with a tensor cut off from its parameter; every backend must still see the parameter (ftdfast's own
    determinism check makes such a pass too)."""
    if backend == "native" and not _ext.HAS_NATIVE:
        pytest.skip("native extension not built")

    def build():
        torch.manual_seed(0)
        model = CachedModel().double()
        model.att = TimmCachedBias().double()
        model.eval()
        with torch.no_grad():
            model(x)  # fills the cache without a graph
        return model

    x, y = _float(5, (4, 3), 3)
    want = ftdfast.fisher_diagonal(build(), (x, y), backend="loop", progress=False)
    assert float(want["att.biases"].abs().max()) > 0
    got = ftdfast.fisher_diagonal(build(), (x, y), backend=backend, batch_size=2, progress=False)
    assert_exact(got, want)
