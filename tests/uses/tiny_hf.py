"""Tiny Hugging Face models for the tests of ftdfast.uses, and the wrappers users put around them."""
import torch
import torch.nn as nn

import ftdfast

VOCAB, LENGTH, LABELS = 40, 6, 3


def bert(seed=0, **config):
    """A BertForSequenceClassification of 1 layer, hidden 16 (about 5k parameters), in eval mode."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=LENGTH, num_labels=LABELS)
    return BertForSequenceClassification(BertConfig(**{**cfg, **config})).eval()


def batches(seed=0, n=12):
    """Token ids (n, LENGTH) and labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n, LENGTH), generator=g), torch.randint(0, LABELS, (n,), generator=g)


class Logits(nn.Module):
    """What a user writes to take a Fisher of a HF model: the model as attribute ``hf``, its ``.logits`` out."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, input_ids):
        return self.hf(input_ids=input_ids).logits


def holder(attribute_path, model):
    """``model`` inside plain modules along a dotted attribute path, e.g. "base_model.model" (as peft nests it),
    "module" (as DDP does) or "_orig_mod" (as torch.compile does)."""
    for name in reversed(attribute_path.split(".")):
        outer = nn.Module()
        outer.add_module(name, model)
        model = outer
    return model


def fisher(model, seed=0):
    """The empirical Fisher of ``Logits(model)`` (names start with "hf.") on 12 random sequences."""
    return ftdfast.fisher_diagonal(Logits(model), batches(seed), progress=False)


def perturbed(model, seed, by=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model
