"""One wrapper-prefix change between a Fisher's (or state's) names and a model's: found, or an error showing both
sides; fisher_merge and EWC on a Hugging Face model wrapped as users wrap it."""
import pytest
import torch

from ftdfast.uses import EWC, fisher_merge
from ftdfast.uses._names import match_names
from tests.uses.tiny_hf import bert, fisher, holder, perturbed

MODEL = ["bert.emb.weight", "bert.layer.0.w", "bert.layer.1.w", "classifier.weight", "classifier.bias"]


def prefixed(prefix, names=MODEL):
    return [prefix + n for n in names]


@pytest.mark.parametrize("need,have", [
    (MODEL, MODEL),
    (MODEL[:2], MODEL),                                       # a Fisher of some parameters (frozen others, LoRA)
    (prefixed("hf."), MODEL),                                 # a Fisher of a wrapper whose .hf is the model
    (MODEL, prefixed("hf.")),                                 # the reverse: a bare Fisher, a wrapped model
    (prefixed("module."), MODEL),                             # DDP
    (prefixed("_orig_mod."), MODEL),                          # torch.compile
    (prefixed("base_model.model."), MODEL),                   # peft
    (prefixed("module._orig_mod.hf."), MODEL),                # nested
    (prefixed("hf.", MODEL[1:3]), prefixed("base_model.model.")),   # partial, stripped and added
    (prefixed("module."), prefixed("_orig_mod.")),            # one wrapper's prefix for another's
], ids=["same", "subset", "strip-hf", "add-hf", "strip-module", "strip-orig-mod", "strip-peft", "strip-nested",
        "partial-hf-to-peft", "module-to-orig-mod"])
def test_a_wrapper_prefix_is_found(need, have):
    rename = match_names(need, have, "fisher", "the model")
    assert list(rename) == need
    assert all(rename[n] in have for n in need)
    # the name after the wrapper prefix is kept whole
    bare = lambda name: name[name.index("bert.") if "bert." in name else name.index("classifier."):]  # noqa: E731
    assert all(bare(rename[n]) == bare(n) for n in need)


@pytest.mark.parametrize("need,have,match", [
    (["weight", "bias"], ["0.weight", "0.bias", "2.weight", "2.bias"],
     r"fisher's names meet the model's in 2 ways after stripping '' \(adding '0.', '2.'\)"),
    (["0.weight", "0.bias"], ["1.weight", "1.bias"], r"fisher has an entry '0.weight' that the model lacks"),
    (prefixed("hf.") + ["hf.extra.w"], MODEL,
     r"fisher has an entry 'hf.extra.w' that the model lacks; with stripping 'hf.' 5 of 6 meet. Left over in fisher: "
     r"'hf.extra.w'; in the model without a counterpart: none"),
    (["enc.a", "enc.b", "enc.c", "enc.d"], ["dec.a", "dec.b"],
     r"fisher has an entry 'enc.a' that the model lacks \(4 such entries\)\. Left over in fisher: 'enc.a', 'enc.b', "
     r"'enc.c', \.\.\. \(4 in all\); in the model without a counterpart: 'dec.a', 'dec.b'"),
], ids=["ambiguous-blocks", "layer-0-is-not-layer-1", "one-extra-entry", "unrelated"])
def test_names_that_no_single_prefix_reconciles_are_an_error_showing_both_sides(need, have, match):
    with pytest.raises(ValueError, match=match):
        match_names(need, have, "fisher", "the model")


WRAPPINGS = ["hf", "module", "_orig_mod", "base_model.model", "module.hf"]


@pytest.fixture(scope="module")
def two_berts():
    a, b = bert(0), perturbed(bert(0), 1)
    return a, b, fisher(a, 0), fisher(b, 1)


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_fisher_merge_of_wrapped_hf_models_equals_the_bare_merge(two_berts, wrapping):
    a, b, fa, fb = two_berts  # Fishers of Logits(model): names "hf.bert...", "hf.classifier..."
    bare_fisher = [{k[len("hf."):]: v for k, v in f.items()} for f in (fa, fb)]
    want = fisher_merge([a, b], bare_fisher, eps=1e-4)
    assert set(want) == set(a.state_dict())
    # model 0 bare, model 1 wrapped; the Fishers keep the hf. prefix: the result has model 0's (HF) names
    got = fisher_merge([a, holder(wrapping, b)], [fa, fb], eps=1e-4)
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    # model 0 wrapped: its names are the result's
    got = fisher_merge([holder(wrapping, a), b.state_dict()], [fa, bare_fisher[1]], eps=1e-4)
    assert list(got) == [f"{wrapping}.{k}" for k in want]
    assert all(torch.equal(got[f"{wrapping}.{k}"], want[k]) for k in want)
    bert(0).load_state_dict(fisher_merge([a, holder(wrapping, b)], [fa, fb]))  # loads into the HF class


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_ewc_with_a_fisher_of_another_wrapping(two_berts, wrapping):
    a, b, fa, _ = two_berts
    model = bert(0)
    bare = EWC(model, {k[len("hf."):]: v for k, v in fa.items()}, strength=2.0)
    wrapped = EWC(holder(wrapping, model), fa, strength=2.0)  # "hf." Fisher onto e.g. "module." names
    perturbed(model, 3)
    want = bare.penalty(model).detach()
    assert float(want) > 0
    for ewc in (bare, wrapped):  # either penalty, on the bare or a wrapped model (compiled later, say)
        for m in (model, holder(wrapping, model), holder("_orig_mod", model)):
            assert float(ewc.penalty(m).detach()) == pytest.approx(float(want), rel=1e-12)


def test_a_fisher_of_another_model_names_both_sides(two_berts):
    a, _, fa, _ = two_berts
    other = bert(0, num_hidden_layers=2)
    with pytest.raises(ValueError, match=r"fisher has an entry 'hf.bert.encoder.layer.1.attention"):
        EWC(a, fisher(other))
    with pytest.raises(ValueError, match=r"models\[1\] has an entry 'bert.encoder.layer.1.attention.*that models\[0\] "
                                         r"lacks"):
        fisher_merge([a, other], [fa, fisher(other)])
