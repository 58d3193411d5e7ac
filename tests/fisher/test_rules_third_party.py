"""Rules for third-party layer classes (torchvision, timm, transformers) and nn.EmbeddingBag,
against the independent float64 per-sample reference, with ``strict=True`` (no fallback)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.fisher.registry import find_rule

from benchmarks.speed.zoo_reference import fisher_reference, max_relative_errors

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


class Around(nn.Module):
    """A Linear in front (so inputs depend on parameters), the layer under test, a Linear head."""

    def __init__(self, layer: nn.Module, d_in: int, d: int, classes: int = 3, channels_first: bool = False):
        super().__init__()
        self.pre, self.layer, self.head = nn.Linear(d_in, d), layer, nn.Linear(d, classes)
        self.channels_first = channels_first

    def forward(self, x):  # x: (n, *positions, d_in)
        h = torch.tanh(self.pre(x))
        if self.channels_first:  # (n, H, W, d) -> (n, d, H, W)
            h = self.layer(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        else:
            h = self.layer(h)
        return self.head(torch.tanh(h).reshape(h.shape[0], -1, h.shape[-1]).mean(1))


@dataclass(frozen=True)
class Case:
    id: str
    layer: Callable[[], nn.Module]
    shape: tuple  # input shape per sample (positions..., d_in)
    n: int
    d: int
    channels_first: bool = False


def _randomize(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(1.0, 0.5)
    return layer


def _timm():
    return pytest.importorskip("timm.layers", reason="timm is not installed")


def _tv_convnext():
    return pytest.importorskip("torchvision.models.convnext", reason="torchvision is not installed")


def _hf(module):
    return pytest.importorskip(module, reason="transformers is not installed")


CASES = [
    Case("torchvision-layernorm2d-odd", lambda: _tv_convnext().LayerNorm2d(5, eps=1e-6), (3, 2, 4), 5, 5, True),
    Case("torchvision-layernorm2d-batch1", lambda: _tv_convnext().LayerNorm2d(3), (1, 1, 2), 1, 3, True),
    Case("timm-layernorm2d", lambda: _timm().LayerNorm2d(4), (2, 3, 3), 3, 4, True),
    Case("timm-layernorm-seq", lambda: _timm().LayerNorm(6), (5, 2), 4, 6),
    Case("timm-layernorm-batch1", lambda: _timm().LayerNorm(3), (2,), 1, 3),
    Case("timm-layerscale-seq", lambda: _timm().LayerScale(5, init_values=0.5), (3, 4), 3, 5),
    Case("timm-layerscale-flat", lambda: _timm().LayerScale(5), (4,), 1, 5),
    Case("timm-layerscale2d", lambda: _timm().LayerScale2d(4), (3, 2, 3), 3, 4, True),
    Case("timm-rmsnorm", lambda: _timm().RmsNorm(7), (3, 2), 5, 7),
    Case("hf-conv1d-seq", lambda: _hf("transformers.pytorch_utils").Conv1D(6, 5), (4, 3), 3, 5),
    Case("hf-conv1d-flat-batch1", lambda: _hf("transformers.pytorch_utils").Conv1D(4, 5), (3,), 1, 5),
    Case("hf-llama-rmsnorm", lambda: _hf("transformers.models.llama.modeling_llama").LlamaRMSNorm(6, eps=1e-5),
         (4, 3), 3, 6),
    Case("hf-qwen2-rmsnorm-same-code", lambda: _hf("transformers.models.qwen2.modeling_qwen2").Qwen2RMSNorm(5),
         (3, 2), 2, 5),
    Case("hf-t5-layernorm", lambda: _hf("transformers.models.t5.modeling_t5").T5LayerNorm(5), (3, 4), 3, 5),
]


def _hf_conv1d_model(case):
    """Conv1D maps (nx -> nf); Around needs the layer to keep width d, so wrap it with a projection."""
    layer = case.layer()
    if layer.weight.shape[0] != layer.weight.shape[1]:
        return nn.Sequential(layer, nn.Linear(layer.weight.shape[1], case.d))
    return layer


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_matches_the_per_sample_reference(case, dtype):
    torch.manual_seed(0)
    layer = _hf_conv1d_model(case) if case.id.startswith("hf-conv1d") else _randomize(case.layer())
    target = layer[0] if isinstance(layer, nn.Sequential) else layer
    assert find_rule(target) is not None, f"no rule registered for {type(target).__qualname__}"
    d_in = case.shape[-1]
    model = Around(layer, d_in, case.d, channels_first=case.channels_first).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(case.n, *case.shape, generator=g)
    y = torch.randint(0, 3, (case.n,), generator=g)
    want = fisher_reference(model.double(), x.double(), y)
    got = ftdfast.fisher_diagonal(model.to(dtype), (x.to(dtype), y), strict=True, progress=False)
    errors = max_relative_errors(got, want)
    assert max(errors.values()) <= TOL[dtype], errors


def test_gemma_style_norm_is_not_mistaken_for_llamas():
    """Gemma's norm scales by (1 + weight): its forward differs, so it keeps the fallback."""
    gemma = _hf("transformers.models.gemma.modeling_gemma")
    assert find_rule(gemma.GemmaRMSNorm(4)) is None


@pytest.mark.parametrize("order", ["library-first", "ftdfast-first"])
def test_rules_register_whichever_is_imported_first(order):
    """The rules of a library's classes exist whether the library was imported before or after ftdfast."""
    import subprocess
    import sys
    _hf("transformers.pytorch_utils")
    imports = ["import transformers.pytorch_utils as pu", "import transformers.models.llama.modeling_llama as ll",
               "import ftdfast"]
    if order == "ftdfast-first":
        imports.reverse()
    code = "; ".join(imports + ["from ftdfast.fisher.registry import find_rule",
                                "print(find_rule(pu.Conv1D(3, 2)).name, find_rule(ll.LlamaRMSNorm(4)).name)"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "hf_conv1d llama_rms_norm", out.stderr


def test_import_ftdfast_imports_no_third_party_library_and_adds_no_import_hook():
    """The rules above are found lazily: importing ftdfast (and asking for a torch layer's rule) neither
    imports timm, torchvision or transformers nor touches the import system."""
    import subprocess
    import sys
    code = ("import sys; hooks = list(sys.meta_path); import ftdfast, torch; "
            "ftdfast.find_rule(torch.nn.Linear(2, 2)); "
            "print([m for m in ('timm', 'torchvision', 'transformers') if m in sys.modules], sys.meta_path == hooks)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[] True", out.stderr


@pytest.mark.parametrize("make", [
    lambda: _hf("transformers.pytorch_utils").Conv1D(3, 2),
    lambda: _hf("transformers.models.llama.modeling_llama").LlamaRMSNorm(4),
    lambda: _timm().LayerNorm2d(4),
], ids=["by-name-hf-conv1d", "by-source-llama-rmsnorm", "by-name-timm-layernorm2d"])
def test_a_users_register_rule_wins_over_the_lazy_rule(monkeypatch, make):
    from ftdfast.fisher import registry
    layer = make()
    assert find_rule(layer) is not None  # the lazy rule, memoized
    monkeypatch.setattr(registry, "_RULES", dict(registry._RULES))

    @ftdfast.register_rule(type(layer))
    def users_rule(module, call):
        return None

    assert find_rule(layer).name == "users_rule"


def _bn_act(act):
    def build():
        layer = _timm().BatchNormAct2d(4, act_layer=act)
        with torch.no_grad():
            layer.running_mean.normal_(0, 0.3)
            layer.running_var.uniform_(0.5, 2.0)
        return layer
    return build


def _scaled_embedding(module, cls, **kw):
    return lambda: getattr(_hf(module), cls)(11, 4, padding_idx=1, **kw)


class Tokens(nn.Module):
    """ids (n, t) -> embedding under test -> mean over t -> Linear."""

    def __init__(self, emb):
        super().__init__()
        self.emb, self.fc = emb, nn.Linear(emb.embedding_dim, 3)

    def forward(self, ids):
        return self.fc(torch.tanh(self.emb(ids)).mean(1))


@pytest.mark.parametrize("act", ["relu-inplace", "gelu", "identity"])
def test_timm_batchnorm_act(act):
    timm_layers = _timm()
    acts = {"relu-inplace": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "identity": nn.Identity}
    torch.manual_seed(0)
    layer = _bn_act(acts[act])()
    assert find_rule(layer) is not None and isinstance(layer, timm_layers.BatchNormAct2d)
    model = Around(_randomize(layer), 3, 4, channels_first=True).double().eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 3, 2, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (3,), generator=g)
    want = fisher_reference(model, x, y)
    got = ftdfast.fisher_diagonal(model, (x, y), strict=True, progress=False)
    assert max(max_relative_errors(got, want).values()) <= 1e-10


@pytest.mark.parametrize("module,cls,kw", [
    ("transformers.models.bart.modeling_bart", "BartScaledWordEmbedding", dict(embed_scale=2.5)),
    ("transformers.models.gemma.modeling_gemma", "GemmaTextScaledWordEmbedding", dict(embed_scale=3.0)),
], ids=["bart-float-scale", "gemma-tensor-scale"])
def test_hf_scaled_word_embedding(module, cls, kw):
    emb = _scaled_embedding(module, cls, **kw)()
    assert find_rule(emb) is not None, f"no rule for {cls}"
    torch.manual_seed(0)
    model = Tokens(emb).double().eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (4, 5), generator=g)
    ids[:, 1] = ids[:, 0]
    y = torch.randint(0, 3, (4,), generator=g)
    want = fisher_reference(model, ids, y)
    got = ftdfast.fisher_diagonal(model, (ids, y), strict=True, progress=False)
    assert max(max_relative_errors(got, want).values()) <= 1e-10
