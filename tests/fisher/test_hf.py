"""Hugging Face models, batches and heads: the Fisher against a per-sequence float64 loop by hand.

The reference runs every sequence ALONE (a batch of one, its own attention mask), computes its
loss from the logits with torch's cross-entropy written out here (shift, -100, mean/sum), and
squares the autograd gradient. That hand loss is checked against Hugging Face's own
``model(**one_sequence).loss`` separately: HF computes it in float32 (``logits.float()``), so it
pins the semantics (shift, mean over label tokens) at float32 precision, and the float64 hand
loss pins the numbers.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast
from ftdfast.fisher.losses import EXACT_MAX_BACKWARDS, TokenCrossEntropy

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

TOL64 = 1e-10  # float64: max |F - F_ref| relative to the largest reference entry
TOL_HF = 1e-5  # HF's loss is formed in float32 (rounding ~6e-8 relative, measured 6e-8 on GPT-2)
V = 11  # vocabulary


# ------------------------------------------------------------------ models
def gpt2(vocab=V):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=vocab, n_positions=16,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def bert_config(**kw):
    return transformers.BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=24, max_position_embeddings=16, pad_token_id=0, **kw)


def bert(cls, **kw):
    torch.manual_seed(0)
    return getattr(transformers, cls)(bert_config(**kw)).double().eval()


# -------------------------------------------------------------------- data
def lm_batches(sizes=(3, 2), t=7, seed=0, mask_random=0.0):
    """Dict batches with right padding, attention_mask and labels = input_ids with -100 at padding
    (and at a random share ``mask_random`` of the other positions, as an MLM collator leaves them)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        ids = torch.randint(1, V, (n, t), generator=g)
        lengths = torch.randint(3, t + 1, (n,), generator=g)
        lengths[0] = t
        att = (torch.arange(t)[None] < lengths[:, None]).long()
        ids = ids * att
        labels = ids.masked_fill(att == 0, -100)
        if mask_random:
            drop = torch.rand(n, t, generator=g) < mask_random
            drop[:, 0] = False  # every row keeps a label
            labels = labels.masked_fill(drop, -100)
        out.append(dict(input_ids=ids, attention_mask=att, labels=labels))
    return out


def cls_batches(num_labels=3, sizes=(3, 2), t=6, seed=0):
    out = []
    for b in lm_batches(sizes, t, seed):
        g = torch.Generator().manual_seed(seed + len(out))
        out.append(dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                        labels=torch.randint(0, num_labels, (b["input_ids"].shape[0],), generator=g)))
    return out


def rows(batches):
    """Every sequence alone, as its own batch of one (inputs, labels)."""
    for b in batches:
        for i in range(b["labels"].shape[0]):
            yield {k: v[i:i + 1] for k, v in b.items() if k != "labels"}, b["labels"][i:i + 1]


# ------------------------------------------------------- losses by hand
def token_losses(logits, labels, shift, reduction):
    """A list of one sequence's sample losses: [mean or sum over its label tokens], or each token's."""
    lg, lb = (logits[0, :-1], labels[0, 1:]) if shift else (logits[0], labels[0])
    keep = lb != -100
    if reduction == "token":
        return [F.cross_entropy(lg[j:j + 1], lb[j:j + 1]) for j in keep.nonzero().flatten().tolist()]
    return [F.cross_entropy(lg[keep], lb[keep], reduction=reduction)]


HAND = {
    "causal_lm": lambda z, y: token_losses(z, y, True, "mean"),
    "causal_lm_sum": lambda z, y: token_losses(z, y, True, "sum"),
    "causal_lm_token": lambda z, y: token_losses(z, y, True, "token"),
    "masked_lm": lambda z, y: token_losses(z, y, False, "mean"),
    "masked_lm_token": lambda z, y: token_losses(z, y, False, "token"),
    "token_classification": lambda z, y: token_losses(z, y, False, "mean"),
    "sequence_classification": lambda z, y: [F.cross_entropy(z, y)],
}


def reference(model, batches, sample_losses):
    """(1/N) sum over samples of the squared gradient, each sequence run alone; N counts the samples."""
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    acc = {k: torch.zeros_like(p) for k, p in params.items()}
    count = 0
    for inputs, labels in rows(batches):
        for loss in sample_losses(model(**inputs).logits, labels):
            grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
            for k, g in zip(params, grads):
                if g is not None:
                    acc[k] += g * g
            count += 1
    return {k: v / count for k, v in acc.items()}, count


def rel_err(got, want):
    scale = max(float(v.abs().max()) for v in want.values())
    return max(float((got[k] - want[k]).abs().max()) for k in want) / scale


def fisher(model, data, **kw):
    kw.setdefault("progress", False)
    return ftdfast.fisher_diagonal(model, data, **kw)


# --------------------------------------------------------------- problems
PROBLEMS = {
    "gpt2-causal_lm": (gpt2, lm_batches, "causal_lm"),
    "gpt2-causal_lm_sum": (gpt2, lm_batches, "causal_lm_sum"),
    "gpt2-causal_lm_token": (gpt2, lm_batches, "causal_lm_token"),
    "bert-masked_lm": (lambda: bert("BertForMaskedLM"), lambda: lm_batches(mask_random=0.5), "masked_lm"),
    "bert-masked_lm_token": (lambda: bert("BertForMaskedLM"), lambda: lm_batches(mask_random=0.5),
                             "masked_lm_token"),
    "bert-token_classification": (lambda: bert("BertForTokenClassification", num_labels=4),
                                  lambda: [dict(b, labels=b["labels"].clamp(max=3)) for b in lm_batches()],
                                  "token_classification"),
    "bert-sequence_classification": (lambda: bert("BertForSequenceClassification", num_labels=3), cls_batches,
                                     "sequence_classification"),
}


@pytest.mark.parametrize("backend", ["rules", "loop", "loop1"])
@pytest.mark.parametrize("pid", list(PROBLEMS))
def test_empirical_matches_the_per_sequence_loop(pid, backend):
    build, data, loss = PROBLEMS[pid]
    model, batches = build(), data()
    got = fisher(model, batches, loss=loss, backend=backend)
    want, count = reference(model, batches, HAND[loss])
    assert got.num_samples == count
    assert rel_err(got, want) < TOL64


@pytest.mark.parametrize("pid", ["gpt2-causal_lm", "bert-masked_lm", "bert-token_classification",
                                 "bert-sequence_classification"])
def test_hand_loss_is_hugging_face_loss(pid):
    """The semantics (shift, -100, mean over a sequence's label tokens) are HF's own, at float32 precision."""
    build, data, loss = PROBLEMS[pid]
    model = build()
    for inputs, labels in rows(data()):
        ours = HAND[loss](model(**inputs).logits, labels)[0]
        theirs = model(**inputs, labels=labels).loss
        assert abs(float(ours - theirs)) <= TOL_HF * abs(float(ours))


def test_causal_lm_against_hugging_face_loss_gradients():
    """The oracle the issue names: the gradient of model(**one_sequence).loss (float32 loss, so TOL_HF)."""
    model, batches = gpt2(), lm_batches()
    got = fisher(model, batches, loss="causal_lm")
    want, _ = reference(model, batches, lambda z, y: [model.loss_function(z, y, vocab_size=V)])
    assert 0 < rel_err(got, want) < TOL_HF


def test_collated_dataloaders_work_unchanged():
    """A DataLoader with DataCollatorForLanguageModeling (causal and masked) and DataCollatorWithPadding."""
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[PAD]", "[UNK]", "[MASK]"] + [f"w{i}" for i in range(V - 3)]
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]",
                                               mask_token="[MASK]")
    texts = ["w1 w2 w3 w4 w5", "w5 w6", "w0 w1 w2", "w7 w7 w3 w2", "w4 w0"]
    feats = [tok(s) for s in texts]
    loader = torch.utils.data.DataLoader(feats, batch_size=2,
                                         collate_fn=transformers.DataCollatorForLanguageModeling(tok, mlm=False))
    model = gpt2()
    got = fisher(model, loader, loss="causal_lm")
    want, count = reference(model, list(loader), HAND["causal_lm"])
    assert got.num_samples == count == len(texts) and rel_err(got, want) < TOL64

    mlm = transformers.DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.6, seed=0)
    batches = [mlm(feats[i:i + 2]) for i in range(0, len(feats), 2)]  # drawn once: both sides see the same masks
    batches = [b for b in batches if bool((b["labels"] != -100).any(dim=1).all())]
    model = bert("BertForMaskedLM")
    got = fisher(model, batches, loss="masked_lm_token")
    want, count = reference(model, batches, HAND["masked_lm_token"])
    assert got.num_samples == count and rel_err(got, want) < TOL64

    labelled = [dict(f, label=i % 3) for i, f in enumerate(feats)]
    loader = torch.utils.data.DataLoader(labelled, batch_size=2, collate_fn=transformers.DataCollatorWithPadding(tok))
    model = bert("BertForSequenceClassification", num_labels=3)
    got = fisher(model, loader, loss="sequence_classification")
    want, _ = reference(model, list(loader), HAND["sequence_classification"])
    assert rel_err(got, want) < TOL64


def test_tensor_dataset_of_several_tensors_names_the_targets_position():
    b = lm_batches(sizes=(5,))[0]
    model = gpt2()
    ds = torch.utils.data.TensorDataset(b["input_ids"], b["attention_mask"], b["labels"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2)

    class Positional(nn.Module):  # a model that takes (input_ids, attention_mask) positionally
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids, att):
            return self.inner(input_ids=ids, attention_mask=att)

    got = fisher(Positional(model), loader, loss="causal_lm", targets=-1)
    want = fisher(model, [b], loss="causal_lm")
    assert rel_err(got, {"inner." + k: want[k] for k in want.keys()}) < TOL64
    with pytest.raises(ValueError, match=r"batch 0: .* a list of 3 items; pass targets=<position>.*targets=-1"):
        fisher(Positional(model), loader, loss="causal_lm")


def test_targets_key_other_than_labels():
    batches = [dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], label=b["labels"])
               for b in cls_batches()]
    model = bert("BertForSequenceClassification", num_labels=3)
    got = fisher(model, batches, targets="label")
    want, _ = reference(model, cls_batches(), HAND["sequence_classification"])
    assert rel_err(got, want) < TOL64


# ------------------------------------------------------- exact and mc
def brute_force_exact(model, batches, shift, reduction):
    """(1/N) sum_n sum over EVERY label sequence y of p(y | x_n) (grad loss_n(y))^2, enumerated."""
    params = {k: p for k, p in model.named_parameters()}
    acc = {k: torch.zeros_like(p) for k, p in params.items()}
    count = 0
    for inputs, labels in rows(batches):
        logits = model(**inputs).logits
        lg = logits[0, :-1] if shift else logits[0]
        lb = labels[0, 1:] if shift else labels[0]
        pos = (lb != -100).nonzero().flatten()
        logp = torch.log_softmax(lg[pos], dim=-1).detach()
        for ys in torch.cartesian_prod(*[torch.arange(lg.shape[-1])] * len(pos)).reshape(-1, len(pos)):
            prob = logp[torch.arange(len(pos)), ys].sum().exp()
            loss = F.cross_entropy(lg[pos], ys, reduction=reduction)
            grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
            for k, g in zip(params, grads):
                if g is not None:
                    acc[k] += prob * g * g
        count += 1
    return {k: v / count for k, v in acc.items()}


@pytest.mark.parametrize("backend", ["rules", "loop"])
@pytest.mark.parametrize("loss,shift,reduction", [("causal_lm", True, "mean"), ("causal_lm_sum", True, "sum"),
                                                  ("masked_lm", False, "mean")])
def test_exact_is_the_expectation_over_every_label_sequence(loss, shift, reduction, backend):
    vocab = 4
    model = gpt2(vocab)  # a (causal) model with a 4-token vocabulary: 4^3 label sequences at most per row
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (3, 4), generator=g)
    labels = ids.clone()
    labels[1, 3] = -100
    labels[2, 1:3] = -100
    labels[:, 0 if shift else 3] = -100  # a position no row labels: skipped
    batches = [dict(input_ids=ids, labels=labels)]
    got = fisher(model, batches, loss=loss, fisher="exact", backend=backend)
    want = brute_force_exact(model, batches, shift, reduction)
    assert rel_err(got, want) < TOL64


def test_token_level_exact_matches_loop():
    model, batches = gpt2(), lm_batches(t=5)
    got = fisher(model, batches, loss="causal_lm_token", fisher="exact")
    want = fisher(model, batches, loss="causal_lm_token", fisher="exact", backend="loop")
    assert got.num_samples == want.num_samples == sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    assert rel_err(got, want) < TOL64


@pytest.mark.parametrize("loss", ["causal_lm", "causal_lm_token", "masked_lm"])
def test_mc_rules_matches_loop_with_the_same_draws(loss):
    model, batches = gpt2(), lm_batches(sizes=(3,), t=5)
    kw = dict(loss=loss, fisher="mc", mc_samples=2)
    a = fisher(model, batches, generator=torch.Generator().manual_seed(5), **kw)
    b = fisher(model, batches, generator=torch.Generator().manual_seed(5), backend="loop", **kw)
    assert a.num_samples == b.num_samples and rel_err(a, b) < TOL64


@pytest.mark.parametrize("loss", ["causal_lm", "causal_lm_token"])
def test_mc_approaches_exact(loss):
    model, batches = gpt2(), lm_batches(sizes=(3,), t=5)
    exact = fisher(model, batches, loss=loss, fisher="exact")
    errors = [rel_err(fisher(model, batches, loss=loss, fisher="mc", mc_samples=k,
                             generator=torch.Generator().manual_seed(1)), exact) for k in (2, 100)]
    assert errors[1] < 0.5 * errors[0]


@pytest.mark.parametrize("shift", [True, False])
def test_mc_draws_are_masked_like_the_labels(shift):
    spec = TokenCrossEntropy(shift=shift)
    z = torch.randn(4, 6, V, dtype=torch.float64)
    y = torch.randint(0, V, (4, 6))
    y[torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) < 0.4] = -100
    y[:, 1] = 3
    drawn = spec.sample(z, y, torch.Generator().manual_seed(0))
    predicted = y[:, 1:] if shift else y
    got = drawn[:, 1:] if shift else drawn
    assert torch.equal(got == -100, predicted == -100)
    if shift:
        assert bool((drawn[:, 0] == -100).all())
    assert bool(((got >= 0) & (got < V) | (got == -100)).all())


# ------------------------------------------------ parameter subsets: LoRA
def test_lora_adapters_only():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True,
                                                         lora_dropout=0.0)).double().eval()
    with torch.no_grad():  # LoRA's B starts at zero: give it values, so every adapter entry has a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    batches = lm_batches()
    got = fisher(model, batches, loss="causal_lm")
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert set(got.keys()) == trainable and all("lora_" in k for k in trainable)
    want, _ = reference(model, batches, HAND["causal_lm"])
    assert rel_err(got, want) < TOL64
    assert all(bool((v > 0).any()) for v in got.values())


def test_frozen_subset_by_hand():
    model = bert("BertForSequenceClassification", num_labels=3)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier") or ".layer.0.output." in name)
    got = fisher(model, cls_batches(), loss="sequence_classification")
    want, _ = reference(model, cls_batches(), HAND["sequence_classification"])
    assert set(got.keys()) == set(want) and rel_err(got, want) < TOL64


# ------------------------------------------------------------- bad input
def test_mapping_without_labels_names_the_keys_and_the_option():
    b = lm_batches()[0]
    del b["labels"]
    with pytest.raises(ValueError, match=r"batch 0 is a mapping with keys \['attention_mask', 'input_ids'\] and "
                                         r"no 'labels': pass targets='<key>'"):
        fisher(gpt2(), [b], loss="causal_lm")


def test_labels_shape_not_matching_logits():
    b = lm_batches()[0]
    b["labels"] = b["labels"][:, :-2]
    with pytest.raises(ValueError, match=r"batch 0: labels of shape \(3, 5\) do not fit logits of shape "
                                         r"\(3, 7, 11\): causal_lm needs one label per position, shape \(3, 7\)"):
        fisher(gpt2(), [b], loss="causal_lm")


@pytest.mark.parametrize("loss,blank,match", [
    ("causal_lm", lambda y: y[1, 1:], r"sample 1 has no label tokens \(every label is -100 after the shift"),
    ("masked_lm", lambda y: y[1], r"sample 1 has no label tokens \(every label is -100\).*'masked_lm_token'"),
])
def test_sequence_without_label_tokens(loss, blank, match):
    batches = lm_batches()
    blank(batches[1]["labels"]).fill_(-100)
    with pytest.raises(ValueError, match="batch 1: " + match):
        fisher(gpt2(), batches, loss=loss)


def test_sequence_without_label_tokens_counts_nothing_at_token_level():
    batches = lm_batches()
    batches[1]["labels"][1, 1:] = -100
    got = fisher(gpt2(), batches, loss="causal_lm_token")
    assert got.num_samples == sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)


def test_output_without_tensor_or_logits():
    model = transformers.GPT2Model(gpt2().config).double().eval()
    with pytest.raises(TypeError, match=r"the model returned BaseModelOutputWithPastAndCrossAttentions with keys "
                                        r"\[.*'last_hidden_state'.*\]; fisher_diagonal needs one tensor .*\.logits"):
        fisher(model, lm_batches(), loss="causal_lm")


def test_cross_entropy_on_token_logits_names_the_token_losses():
    with pytest.raises(ValueError, match=r"token logits \(n, t, V\) with labels \(n, t\).*loss='causal_lm'"):
        fisher(gpt2(), [dict(b, labels=b["labels"].clamp(min=0)) for b in lm_batches()])


def test_cross_entropy_with_ignored_labels_names_the_token_losses():
    model = nn.Sequential(nn.Linear(4, 3)).double()
    y = torch.tensor([0, -100, 2])
    with pytest.raises(ValueError, match=r"label -100 marks a position to ignore .*loss='causal_lm'"):
        fisher(model, (torch.randn(3, 4, dtype=torch.float64), y))


def test_exact_refused_above_the_limit():
    class TinyLM(nn.Module):
        def __init__(self, vocab):
            super().__init__()
            self.emb, self.head = nn.Embedding(vocab, 4), nn.Linear(4, vocab)

        def forward(self, input_ids):
            return self.head(self.emb(input_ids))

    vocab, t = 600, 9  # 8 label positions x 600 classes > EXACT_MAX_BACKWARDS
    assert (t - 1) * vocab > EXACT_MAX_BACKWARDS
    ids = torch.randint(0, vocab, (2, t))
    with pytest.raises(ValueError, match=r"8 positions x 600 classes = 4800 backwards .* above the limit of 4096 "
                                         r".*GPT-2: 50,257 x T.*Use fisher='mc'"):
        fisher(TinyLM(vocab), [dict(input_ids=ids, labels=ids)], loss="causal_lm", fisher="exact")


@pytest.mark.parametrize("targets,batch,match", [
    ("labels", (torch.zeros(2, 3), torch.zeros(2)), r"batch 0 is a tuple of 2 items but targets='labels' is a key"),
    (1, {"x": torch.zeros(2, 3), "labels": torch.zeros(2)}, r"batch 0 is a mapping .* targets=1 is a position"),
    (5, (torch.zeros(2, 3), torch.zeros(2)), r"targets=5 is not a position in a tuple of 2 items"),
    (1.5, (torch.zeros(2, 3), torch.zeros(2)), r"targets must be a key"),
])
def test_bad_targets_option(targets, batch, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fisher(nn.Linear(3, 2), [batch], targets=targets)


def test_token_loss_options_are_checked():
    with pytest.raises(ValueError, match="reduction applies to samples='sequence'"):
        TokenCrossEntropy(shift=True, reduction="sum", samples="token")
    with pytest.raises(ValueError, match=r"samples='word' is not one of \('sequence', 'token'\)"):
        TokenCrossEntropy(shift=True, samples="word")
