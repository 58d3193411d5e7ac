"""Fisher saliency and pruning masks against hand computations: global and per-layer, ties, 0 and 1, errors."""
import pytest
import torch
import torch.nn as nn

import ftdfast
from ftdfast.uses import apply_masks, fisher_saliency, format_saliency_table, prune_masks


def net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).to(dtype)


def fisher_of(model):
    g = torch.Generator().manual_seed(3)
    return {n: torch.rand(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}


def test_saliency_is_half_the_fisher_times_the_squared_weight():
    model = net()
    fisher = fisher_of(model)
    s = fisher_saliency(model, fisher)
    assert list(s) == list(fisher)
    for n, p in model.named_parameters():
        assert s[n].dtype == torch.float64 and s[n].shape == p.shape and not s[n].requires_grad
        want = [f * t * t / 2 for f, t in zip(fisher[n].reshape(-1).tolist(), p.reshape(-1).tolist())]
        torch.testing.assert_close(s[n].reshape(-1), torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


def test_saliency_of_a_wrapped_model_a_state_dict_and_a_real_fisher():
    model = net(torch.float64)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    fisher = ftdfast.fisher_diagonal(model, (x, y), backend="loop", progress=False)
    want = fisher_saliency(model, fisher)
    wrapped = fisher_saliency(nn.DataParallel(model), fisher)  # the inner module's names
    assert list(wrapped) == list(want)
    prefixed = fisher_saliency(nn.DataParallel(model).state_dict(), {"module." + k: v for k, v in fisher.items()})
    assert list(prefixed) == ["module." + k for k in want]  # names that already meet are kept
    for n in want:
        torch.testing.assert_close(wrapped[n], want[n], rtol=0, atol=0)
        torch.testing.assert_close(prefixed["module." + n], want[n], rtol=0, atol=0)


SCORES = {"a": torch.tensor([[5.0, 1.0], [3.0, 0.5]]), "b": torch.tensor([4.0, 2.0, 0.1])}


@pytest.mark.parametrize("sparsity,scope,want", [
    (0.0, "global", {"a": [[1, 1], [1, 1]], "b": [1, 1, 1]}),
    (1.0, "global", {"a": [[0, 0], [0, 0]], "b": [0, 0, 0]}),
    (3 / 7, "global", {"a": [[1, 0], [1, 0]], "b": [1, 1, 0]}),     # prune the 3 smallest: 0.1, 0.5, 1.0
    (0.5, "global", {"a": [[1, 0], [1, 0]], "b": [1, 0, 0]}),       # 3.5 rounds up: 4 pruned, 2.0 too
    (0.5, "layer", {"a": [[1, 0], [1, 0]], "b": [1, 0, 0]}),        # a: 2 of 4 pruned; b: 1.5 -> 2 of 3
    (0.2, "layer", {"a": [[1, 1], [1, 0]], "b": [1, 1, 0]}),        # a: 0.8 -> 1; b: 0.6 -> 1
], ids=["zero", "one", "three-of-seven", "half-global", "half-layer", "fifth-layer"])
def test_masks_keep_the_largest(sparsity, scope, want):
    masks = prune_masks(SCORES, sparsity, scope=scope)
    for n in SCORES:
        assert masks[n].dtype == torch.bool
        assert torch.equal(masks[n], torch.tensor(want[n], dtype=torch.bool))


def test_ties_keep_the_earlier_entries_and_the_count_is_exact():
    scores = {"a": torch.ones(5), "b": torch.ones(2, 3)}
    masks = prune_masks(scores, 0.45)  # 11 entries: 0.45 * 11 = 4.95 -> 5 pruned, 6 kept
    flat = torch.cat([masks["a"], masks["b"].reshape(-1)])
    assert flat.tolist() == [True] * 6 + [False] * 5
    per_layer = prune_masks(scores, 0.5, scope="layer")
    assert per_layer["a"].tolist() == [True, True, False, False, False]  # 2.5 -> 3 pruned
    assert per_layer["b"].tolist() == [[True, True, True], [False, False, False]]  # 3 pruned


def test_masks_from_a_model_and_fisher_then_applied():
    model = net()
    fisher = fisher_of(model)
    s = fisher_saliency(model, fisher)
    masks = prune_masks(model, 0.5, fisher=fisher)
    assert masks.keys() == s.keys()
    kept = torch.cat([s[n][masks[n]] for n in s])
    pruned = torch.cat([s[n][~masks[n]] for n in s])
    assert kept.numel() == 7 and pruned.numel() == 7  # 14 entries and float(kept.min()) >= float(pruned.max())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert apply_masks(nn.DataParallel(model), {"module." + k: v for k, v in masks.items()}).module is model
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] * masks[n], rtol=0, atol=0)


def test_table_lists_every_tensor_and_the_total():
    text = format_saliency_table(SCORES)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["parameter", "params"] and lines[1].split()[0] == "a"
    assert lines[-1].split()[:3] == ["total", "7", "15.6"]
    assert "60.90%" in lines[1]  # 9.5 / 15.6


@pytest.mark.parametrize("call,match", [
    (lambda m, f: prune_masks(m, 0.5), "without fisher="),
    (lambda m, f: prune_masks(SCORES, 1.5), r"sparsity must be a fraction in \[0, 1\]"),
    (lambda m, f: prune_masks(SCORES, 0.5, scope="tensor"), "scope='tensor' is not one of"),
    (lambda m, f: prune_masks({"a": torch.tensor([1.0, float("nan")])}, 0.5), "NaN or infinite"),
    (lambda m, f: prune_masks({"a": torch.tensor([True])}, 0.5), "scores are real numbers"),
    (lambda m, f: fisher_saliency(m, {"0.weight": torch.ones(3, 2)}), r"has shape \(3, 2\)"),
    (lambda m, f: fisher_saliency(m, {"x.weight": torch.ones(3, 2)}),
     "fisher has an entry 'x.weight' that the model lacks"),
    (lambda m, f: apply_masks(m, {"0.weight": torch.ones(2, 3)}), "must be a bool tensor"),
    (lambda m, f: apply_masks(m, {"x": torch.ones(2, dtype=torch.bool)}),
     "masks has an entry 'x' that the model lacks"),
], ids=["model-without-fisher", "sparsity-range", "scope", "nan", "bool-scores", "fisher-shape", "fisher-name",
        "mask-dtype", "mask-name"])
def test_errors(call, match):
    model = net()
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, fisher_of(model))
