"""fuse_search and random_search: budgets, the incumbent policy, seeds, spaces smaller than the budget."""
import copy

import pytest
import torch

from ftdfast.nas import Budget, SearchSpace, derive_seed, uniform_genotype
from ftdfast.nas import search as S

from .conftest import TINY_BUDGET

TINY = Budget(**TINY_BUDGET)


def _spy_fuse(monkeypatch):
    seen = []
    real = S.fuse

    def spy(cands, *a, **k):
        seen.append((list(cands), k["seed"], [copy.deepcopy(c.state_dict()) for c in cands]))
        return real(cands, *a, **k)
    monkeypatch.setattr(S, "fuse", spy)
    return seen


@pytest.mark.parametrize("policy", ["reinit", "keep", "head"])
def test_incumbent_policy(tasks, monkeypatch, policy):
    seen = _spy_fuse(monkeypatch)
    budget = Budget(**{**TINY_BUDGET, "iterations": 2, "incumbent": policy, "schedule": "threshold"})
    out = S.fuse_search(SearchSpace(), tasks[2], budget, progress=False)
    first, second, second_start = seen[0][0], seen[1][0], seen[1][2]
    winner = first[out.history[0]["best"]]
    assert second[0].genotype == winner.genotype                 # the winner joins the next run first
    if policy == "keep":
        assert second[0] is winner                               # trained weights kept
    else:
        assert second[0] is not winner                           # fresh weights: equal terms with the others
        fresh = S._network(SearchSpace(), winner.genotype, budget, tasks[2], derive_seed(0, "init", 1, 0))
        trained = winner.state_dict()
        for name, p in second_start[0].items():
            # "head" (the authors'): the trained classifier, every other weight fresh
            want = trained[name] if policy == "head" and name.startswith("classifier.") else fresh.state_dict()[name]
            assert torch.equal(p, want), name
    assert out.history[1]["incumbent"] == policy and out.genotype is not None


def test_history_keeps_alpha_and_candidate_validation_losses(tasks):
    out = S.fuse_search(SearchSpace(), tasks[2], TINY, progress=False)
    h = out.history[0]
    assert len(h["alpha_history"]) == h["rounds_run"] + 1
    assert len(h["candidate_val_loss_history"][-1]) == len(h["genotypes"]) == TINY.candidates
    assert all(v > 0 for v in h["candidate_val_loss_history"][-1])


def test_searches_with_different_seeds_draw_different_pools(tasks, monkeypatch):
    seen = _spy_fuse(monkeypatch)
    a = S.fuse_search(SearchSpace(), tasks[2], TINY, seed=derive_seed(0, "ta_nas"), progress=False)
    b = S.fuse_search(SearchSpace(), tasks[2], TINY, seed=derive_seed(0, "fuse_general"), progress=False)
    pools = [[c.genotype for c in cands] for cands, _, _ in seen]
    assert pools[0] != pools[1] and seen[0][1] != seen[1][1]
    again = S.fuse_search(SearchSpace(), tasks[2], TINY, seed=derive_seed(0, "ta_nas"), progress=False)
    assert again.genotype == a.genotype and again.history[0]["alpha_history"] == a.history[0]["alpha_history"]
    assert b.seed != a.seed


def test_random_search_trains_each_candidate_alone(tasks):
    out = S.random_search(SearchSpace(), tasks[2], TINY, progress=False)
    assert len(out.history) == TINY.iterations * TINY.candidates
    best = max(h["val_accuracy"] for h in out.history)
    assert any(h["genotype"] == out.genotype.to_dict() and h["val_accuracy"] == best for h in out.history)
    n_train = round(0.8 * len(tasks[2].y_train))
    assert out.history[0]["epochs"] == S.epochs_for_steps(TINY.weight_steps, TINY.batch_size, n_train)


@pytest.mark.parametrize("steps,batch,n,want", [(60, 64, 1000, 4), (1, 32, 10_000, 1), (100, 10, 500, 2)])
def test_epochs_for_steps(steps, batch, n, want):
    assert S.epochs_for_steps(steps, batch, n) == want


def test_search_in_a_space_smaller_than_the_budget(tasks):
    tiny_space = SearchSpace().restrict_to(uniform_genotype("conv_3x3", 3))
    assert tiny_space.size() == 1
    out = S.fuse_search(tiny_space, tasks[2], TINY, progress=False)
    assert out.genotype == tiny_space.sample(0)


def test_regression_task_is_refused(tasks):
    class Reg:
        loss = "mse"
    with pytest.raises(ValueError, match="classification TaskData"):
        S.fuse_search(SearchSpace(), Reg(), TINY)
    with pytest.raises(ValueError, match="classification TaskData"):
        S.random_search(SearchSpace(), Reg(), TINY)


def test_budget_weight_loss_reaches_fuse(tasks, monkeypatch):
    seen = []
    real = S.fuse
    monkeypatch.setattr(S, "fuse", lambda *a, **k: seen.append(a[3].weight_loss) or real(*a, **k))
    budget = Budget(**{**TINY_BUDGET, "weight_loss": "own", "schedule": "threshold"})
    S.fuse_search(SearchSpace(), tasks[2], budget, progress=False)
    assert seen == ["own"] * TINY.iterations


def test_budget_round_trip():
    b = Budget(iterations=3, incumbent="keep", seconds=5.0, weight_loss="own", schedule="threshold")
    assert Budget.from_dict(b.to_dict()) == b
