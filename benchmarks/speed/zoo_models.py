"""The model zoo: architectures built from torchvision, timm and transformers code with tiny
configs and random weights (nothing is downloaded), as data with readable ids.

Each entry builds a module returning one logits tensor (n, C) (small wrappers pick e.g. the
last position's LM logits), inputs for a few samples and integer labels. Sizes are awkward on
purpose: sequence lengths shorter than the position table, padding masks, batch of 1.
``library`` names the package the entry needs; the tests skip with that reason when it is missing.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

CLASSES = 5
VOCAB = 50


@dataclass(frozen=True)
class ZooModel:
    id: str
    library: str  # "torchvision", "timm", "transformers" or "torch"
    build: Callable[[], nn.Module]
    data: Callable[[torch.Generator], Tuple[object, torch.Tensor]]
    xfail: Optional[str] = None  # why the fast path is still wrong or crashes (a known, filed defect)

    def available(self) -> Optional[str]:
        """None when the library imports, else the reason to skip."""
        if self.library == "torch":
            return None
        try:
            importlib.import_module(self.library)
        except ImportError as e:
            return f"{self.library} is not installed ({e})"
        return None


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters for every norm layer (random, not 1 and 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                for name, centre in (("weight", 1.0), ("bias", 0.0)):
                    p = getattr(m, name, None)
                    if isinstance(p, nn.Parameter):
                        p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))
    return model


def images(n: int, size: int, channels: int = 3):
    return lambda g: (torch.randn(n, channels, size, size, generator=g),
                      torch.randint(0, CLASSES, (n,), generator=g))


def tokens(n: int, length: int, pad_last: int = 0, vocab: int = VOCAB):
    """ids (n, length) in 2..vocab-1 and, when ``pad_last`` > 0, the last ``pad_last`` positions of
    every other sample set to the pad id 0 (the wrappers derive the attention mask from it)."""
    def make(g):
        ids = torch.randint(2, vocab, (n, length), generator=g)
        if pad_last:
            ids[::2, length - pad_last:] = 0
        return ids, torch.randint(0, CLASSES, (n,), generator=g)
    return make


def sequences(n: int, length: int, features: int):
    return lambda g: (torch.randn(n, length, features, generator=g), torch.randint(0, CLASSES, (n,), generator=g))


# ----------------------------------------------------------------------------- wrappers
class LastPosition(nn.Module):
    """A Hugging Face model's logits at the last position, through a small head to CLASSES logits."""

    def __init__(self, model: nn.Module, width: int, kind: str = "causal"):
        super().__init__()
        self.model, self.kind, self.head = model, kind, nn.Linear(width, CLASSES)

    def forward(self, ids):
        mask = (ids != 0).long()
        if self.kind == "causal":
            out = self.model(input_ids=ids, attention_mask=mask).logits
        elif self.kind == "encoder":
            out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        else:  # "seq2seq": the decoder reads the ids shifted right by one
            dec = torch.cat([torch.ones_like(ids[:, :1]), ids[:, :-1]], dim=1)
            out = self.model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        return self.head(torch.tanh(out[:, -1]))


class Recurrent(nn.Module):
    def __init__(self, kind: str, features: int = 4, hidden: int = 5, stacked: bool = False):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        if stacked:  # two separate single-layer modules, one after the other
            self.rnns = nn.ModuleList([cls(features, hidden, batch_first=True), cls(hidden, hidden, batch_first=True)])
        else:
            self.rnns = nn.ModuleList([cls(features, hidden, num_layers=2, bidirectional=True, batch_first=True)])
        width = hidden if stacked else 2 * hidden
        self.fc = nn.Linear(width, CLASSES)

    def forward(self, x):
        for rnn in self.rnns:
            x, _ = rnn(x)
        return self.fc(x[:, -1])


class Encoder(nn.Module):
    def __init__(self, d=8, heads=2, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=12, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.fc = nn.Linear(d, CLASSES)

    def forward(self, x):
        pad = torch.zeros(x.shape[:2], dtype=torch.bool)
        pad[::2, -1] = True  # every other sample's last position is padding
        return self.fc(self.enc(x, src_key_padding_mask=pad).mean(dim=1))


class Bags(nn.Module):
    """A bag-of-words classifier: ids (n, L) with 0 as padding -> 1-D ids + offsets (ragged bags) ->
    EmbeddingBag(mode) -> Linear."""

    def __init__(self, vocab: int = VOCAB, d: int = 8, mode: str = "mean"):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, d, mode=mode)
        self.fc = nn.Linear(d, CLASSES)

    def forward(self, ids):
        present = ids != 0
        sizes = present.sum(1)
        offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return self.fc(torch.tanh(self.bag(ids[present], offsets)))


# ----------------------------------------------------------------------------- builders
def _tv(name, **kw):
    import torchvision.models as tvm
    return lambda: getattr(tvm, name)(weights=None, num_classes=CLASSES, **kw)


def _tv_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    return ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=CLASSES)


def _timm(name, **kw):
    def build():
        import timm
        return timm.create_model(name, pretrained=False, num_classes=CLASSES, **kw)
    return build


def _vit():
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2,
                             num_classes=CLASSES, init_values=0.1)


def _deit():
    from timm.models.deit import VisionTransformerDistilled
    return VisionTransformerDistilled(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2,
                                      num_classes=CLASSES)


def _mixer():
    from timm.models.mlp_mixer import MlpMixer
    return MlpMixer(num_classes=CLASSES, img_size=16, patch_size=8, num_blocks=2, embed_dim=16)


def _timm_convnext():
    from timm.models.convnext import ConvNeXt
    return ConvNeXt(num_classes=CLASSES, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), ls_init_value=0.5)


def _efficientformer():
    from timm.models.efficientformer import EfficientFormer
    # its attention biases are sized for a 7x7 last stage: 224x224 inputs (narrow widths keep it cheap)
    return EfficientFormer(depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), num_vit=1, num_classes=CLASSES)


def _hf(config_name, model_name, kind="causal", width=None, **cfg):
    def build():
        import transformers
        config = getattr(transformers, config_name)(**cfg)
        config._attn_implementation = "eager"
        model = getattr(transformers, model_name)(config)
        w = width if width is not None else (VOCAB if kind != "encoder" else cfg.get("hidden_size", 16))
        return LastPosition(model, w, kind)
    return build


ZOO = [
    # torchvision CNNs
    ZooModel("tv-resnet18", "torchvision", _tv("resnet18"), images(3, 32)),
    ZooModel("tv-resnet18-batch1", "torchvision", _tv("resnet18"), images(1, 32)),
    ZooModel("tv-mobilenet-v3-small", "torchvision", _tv("mobilenet_v3_small", width_mult=0.5), images(3, 32)),
    ZooModel("tv-efficientnet-b0", "torchvision", _tv("efficientnet_b0"), images(2, 32)),
    ZooModel("tv-regnet-y-400mf", "torchvision", _tv("regnet_y_400mf"), images(3, 32)),
    ZooModel("tv-squeezenet1-1", "torchvision", _tv("squeezenet1_1"), images(3, 33)),
    ZooModel("tv-convnext-tiny-config", "torchvision", _tv_convnext, images(3, 32)),
    # timm
    ZooModel("timm-convnext-tiny-config", "timm", _timm_convnext, images(3, 32)),
    ZooModel("timm-vit-layerscale", "timm", _vit, images(3, 16)),
    ZooModel("timm-deit-distilled", "timm", _deit, images(3, 16)),
    ZooModel("timm-mixer", "timm", _mixer, images(3, 16)),
    ZooModel("timm-mobilevit-xxs", "timm", _timm("mobilevit_xxs"), images(2, 64)),
    ZooModel("timm-levit-128s", "timm", _timm("levit_128s", img_size=64), images(2, 64)),
    ZooModel("timm-efficientformer-narrow", "timm", _efficientformer, images(2, 224)),
    # transformers
    ZooModel("hf-gpt2", "transformers", _hf("GPT2Config", "GPT2LMHeadModel", vocab_size=VOCAB, n_positions=32,
                                            n_embd=16, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=1), tokens(3, 7, pad_last=2)),
    ZooModel("hf-gpt2-batch1", "transformers", _hf("GPT2Config", "GPT2LMHeadModel", vocab_size=VOCAB,
                                                   n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=1,
                                                   eos_token_id=1), tokens(1, 5)),
    ZooModel("hf-bert", "transformers", _hf("BertConfig", "BertModel", "encoder", vocab_size=VOCAB, hidden_size=16,
                                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                                            max_position_embeddings=32), tokens(3, 7, pad_last=2)),
    ZooModel("hf-bart", "transformers", _hf("BartConfig", "BartForConditionalGeneration", "seq2seq",
                                            vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1,
                                            encoder_attention_heads=2, decoder_attention_heads=2,
                                            encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32),
             tokens(3, 6, pad_last=2)),
    ZooModel("hf-t5", "transformers", _hf("T5Config", "T5ForConditionalGeneration", "seq2seq", vocab_size=VOCAB,
                                          d_model=16, d_kv=8, d_ff=24, num_layers=1, num_heads=2,
                                          decoder_start_token_id=0), tokens(3, 6, pad_last=2)),
    ZooModel("hf-llama", "transformers", _hf("LlamaConfig", "LlamaForCausalLM", vocab_size=VOCAB, hidden_size=16,
                                             intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=1, max_position_embeddings=32),
             tokens(3, 7, pad_last=2)),
    # torch recurrent and attention
    ZooModel("torch-lstm-2layer-bidir", "torch", lambda: Recurrent("lstm"), sequences(3, 6, 4)),
    ZooModel("torch-gru-2layer-bidir", "torch", lambda: Recurrent("gru"), sequences(3, 6, 4)),
    ZooModel("torch-two-stacked-grus", "torch", lambda: Recurrent("gru", stacked=True), sequences(3, 5, 4)),
    ZooModel("torch-transformer-encoder-padmask", "torch", Encoder, sequences(3, 5, 8)),
    ZooModel("torch-embeddingbag-offsets", "torch", Bags, tokens(4, 6, pad_last=3)),
]

BY_ID = {m.id: m for m in ZOO}


def build(entry: ZooModel, dtype=torch.float64, seed: int = 0):
    """The entry's model (eval mode, ``dtype``) and its (inputs, labels), deterministic in ``seed``."""
    torch.manual_seed(seed)
    model = randomize_norm_stats(entry.build(), seed).to(dtype).eval()
    inputs, y = entry.data(torch.Generator().manual_seed(seed + 1))
    if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
        inputs = inputs.to(dtype)
    return model, inputs, y
