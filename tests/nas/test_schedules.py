"""FUSE schedules: the FuseConfig checks, the rung sizes, successive halving inside fuse() (who leaves, the pick,
the steps, resuming), Budget.plan's accounting against random search, the presets."""
import copy
import importlib

import pytest
import torch

from ftdfast.nas import Budget, FuseConfig, SearchSpace, fuse, random_search_steps, split_train_val
from ftdfast.nas import search as S

from .conftest import TINY_BUDGET

fuse_module = importlib.import_module("ftdfast.nas.fuse")      # the module (ftdfast.nas.fuse is the function)
FAST = dict(channels=2, layers=1, progress=False, batched=False)


@pytest.fixture(scope="module")
def small(digits):
    x, y = digits
    return split_train_val(x[:400], y[:400], fraction=0.25, seed=0)


def _genotypes(k):
    return SearchSpace(node_counts=(3,)).sample_many(k, 11)


# ---------------------------------------------------------------------- the config
@pytest.mark.parametrize("kw,match", [
    pytest.param({"rounds": 0}, r"FuseConfig.rounds must be an int >= 1", id="no-rounds"),
    pytest.param({"rounds": 2, "w_steps": (3,)}, r"w_steps has 1 entries for 2 rounds", id="steps-per-round"),
    pytest.param({"w_steps": -1}, r"FuseConfig.w_steps must be an int >= 0", id="negative-steps"),
    pytest.param({"rounds": 2, "w_steps": (3, 1.5)}, r"w_steps\[1\] must be an int", id="float-round-steps"),
    pytest.param({"threshold": 1.5}, r"threshold must be in \(0, 1\] or None", id="threshold-above-one"),
    pytest.param({"threshold": 0.9, "weight_loss": "own"}, r"stopping rules\) need weight_loss='mixture'",
                 id="threshold-with-own"),
    pytest.param({"tol": 1e-3, "halving": True}, r"need weight_loss='mixture' and halving=False", id="tol-halving"),
    pytest.param({"optimizer": "lbfgs"}, r"FuseConfig.optimizer must be one of \('adam', 'sgd'\)", id="optimizer"),
    pytest.param({"halving": 1}, r"FuseConfig.halving must be True or False, got 1", id="halving-not-bool"),
])
def test_bad_fuse_config(kw, match):
    with pytest.raises(ValueError, match=match):
        FuseConfig(**kw)


def test_fuse_takes_only_a_fuse_config(small):
    train, val = small
    with pytest.raises(TypeError, match="config must be a FuseConfig, got dict"):
        fuse(_genotypes(2), train, val, {"rounds": 1}, **FAST)


@pytest.mark.parametrize("k,rounds,want", [
    pytest.param(8, 3, [8, 4, 2], id="8-in-3-rungs"),
    pytest.param(10, 4, [10, 5, 3, 2], id="odd-keeps-the-upper-half-rounded-up"),
    pytest.param(3, 4, [3, 2, 1, 1], id="never-below-one"),
    pytest.param(1, 1, [1], id="one"),
])
def test_rung_sizes(k, rounds, want):
    assert FuseConfig(rounds=rounds, halving=True).active_counts(k) == want
    assert FuseConfig(rounds=rounds).active_counts(k) == [k] * rounds
    steps = tuple(range(1, rounds + 1))
    assert FuseConfig(rounds=rounds, w_steps=steps, halving=True).weight_steps(k) == sum(
        n * s for n, s in zip(want, steps))


# ---------------------------------------------------------------------- halving inside fuse()
HALVING = dict(rounds=3, w_steps=(3, 2, 4), halving=True, weight_loss="own", alpha_steps=30, batch_size=16)


def test_halving_drops_the_lower_half_by_alpha_and_picks_argmax_among_the_last(small):
    train, val = small
    res = fuse(_genotypes(5), train, val, FuseConfig(**HALVING), seed=2, **FAST)
    assert [len(a) for a in res.active_history] == [5, 3, 2]
    for r in (0, 1):     # who stays after round r: the upper half of those in, by the alpha fitted in round r
        alpha = res.alpha_history[r + 1]
        kept, was = res.active_history[r + 1], res.active_history[r]
        left = [k for k in was if k not in kept]
        assert set(kept) <= set(was) and min(alpha[k] for k in kept) >= max(alpha[k] for k in left)
        for k in left:   # a candidate that left: no more weight, no validation record, its alpha frozen
            assert all(h[k] is None for h in res.val_accuracy_history[r + 1:])
            assert all(s[k] == 0.0 for s in res.softmax_history[r + 2:])
            assert all(a[k] == alpha[k] for a in res.alpha_history[r + 1:])
    last = res.active_history[-1]
    assert res.best_index == max(last, key=lambda k: res.alpha[k]) and res.stop_reason == "rounds"
    assert sum(res.weights[k] for k in last) == pytest.approx(1.0)
    assert FuseConfig(**HALVING).weight_steps(5) == 5 * 3 + 3 * 2 + 2 * 4


def test_a_candidate_that_left_is_not_trained_any_more(small):
    """Under "own" and unbatched, each candidate trains as if alone: those that leave after round 1 end with the
    weights a one-round run gives them (the same first-round batches)."""
    train, val = small
    gens = _genotypes(4)
    full = fuse(gens, train, val, FuseConfig(**{**HALVING, "rounds": 2, "w_steps": (3, 5)}), seed=4, **FAST)
    one = fuse(gens, train, val, FuseConfig(**{**HALVING, "rounds": 1, "w_steps": (3,)}), seed=4, **FAST)
    left = [k for k in range(4) if k not in full.active_history[1]]
    assert len(left) == 2
    for k in range(4):
        same = all(torch.equal(a, b) for a, b in zip(full.candidates[k].state_dict().values(),
                                                     one.candidates[k].state_dict().values()))
        assert same == (k in left), k


def test_halving_resumes_from_its_checkpoint(small, tmp_path, monkeypatch):
    train, val = small
    gens = _genotypes(4)
    config = FuseConfig(**HALVING)
    whole = fuse(gens, train, val, config, seed=1, **FAST)
    path = tmp_path / "halving.pt"
    real, calls = fuse_module._round, []

    def interrupted(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped after two rounds")
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(fuse_module, "_round", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fuse(gens, train, val, config, seed=1, checkpoint=path, **FAST)
    monkeypatch.setattr(fuse_module, "_round", real)
    resumed = fuse(gens, train, val, config, seed=1, checkpoint=path, **FAST)
    assert resumed.active_history == whole.active_history and resumed.alpha_history == whole.alpha_history
    assert resumed.best_index == whole.best_index
    with pytest.raises(ValueError, match=r"differs in: config"):      # rounds are part of a halving run's identity
        fuse(gens, train, val, FuseConfig(**{**HALVING, "rounds": 4, "w_steps": (3, 2, 4, 1)}), seed=1,
             checkpoint=path, **FAST)


# ---------------------------------------------------------------------- Budget.plan: the accounting
# Budget(rounds=4, w_steps=16, batch_size=64) on 2,000 training images: random search trains round(64 * 64 / 2000)
# = 2 epochs of ceil(2000 / 64) = 32 batches = 64 steps per cell; a pool of 8 makes T = 512 candidate-steps.
PLANS = [
    pytest.param("halving", (8,), [(21, 42, 88)], id="halving: 512//(3*8), 512//(3*4), (512-168-168)//2"),
    pytest.param("paper", (3, 3, 3), [(6,) * 6 + (5,) * 4] * 3, id="paper: 3 runs of 3, 512//9 = 56 per cell"),
    pytest.param("threshold", (4, 5), [(14,) * 4] * 2, id="threshold: 4 then 4 + incumbent, 512//9 = 56 per cell"),
]


@pytest.mark.parametrize("schedule,sizes,steps", PLANS)
def test_plan_spends_random_search_total(schedule, sizes, steps):
    budget = Budget(iterations=2, candidates=4, rounds=4, w_steps=16, batch_size=64, schedule=schedule)
    assert random_search_steps(budget, 2000) == 64
    plan = budget.plan(8, 2000, 500)
    assert plan.target_steps == 512 and plan.run_sizes == sizes
    assert [c.w_steps for c in plan.configs] == steps
    assert plan.target_steps - sum(plan.run_sizes) < plan.weight_steps <= plan.target_steps


def test_paper_plan_is_the_authors_schedule():
    plan = Budget(schedule="paper", batch_size=64).plan(8, 2000, 500)
    c = plan.configs[0]
    assert (c.rounds, c.alpha_lr, c.alpha_steps, c.alpha_tol, c.weight_loss) == (10, 1e-3, 10 * 8, 0.0, "mixture")
    assert c.threshold is None and c.tol is None and plan.incumbent == "head"


@pytest.mark.parametrize("pool", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("schedule", ["halving", "paper", "threshold"])
def test_plan_never_exceeds_random_search(schedule, pool):
    budget = Budget(iterations=1, candidates=pool, rounds=2, w_steps=7, batch_size=16, schedule=schedule)
    plan = budget.plan(pool, 300, 75)
    assert plan.target_steps == pool * random_search_steps(budget, 300)
    assert plan.target_steps - sum(plan.run_sizes) < plan.weight_steps <= plan.target_steps


def test_halving_search_spends_what_random_search_spends_on_the_same_pool(tasks, monkeypatch):
    budget = Budget(**{**TINY_BUDGET, "iterations": 2, "schedule": "halving"})
    pools = []
    real = S.fuse
    monkeypatch.setattr(S, "fuse", lambda cands, *a, **k: pools.append(copy.deepcopy(
        [c.state_dict() for c in cands])) or real(cands, *a, **k))
    fused = S.fuse_search(SearchSpace(), tasks[2], budget, seed=3, progress=False)
    rand = S.random_search(SearchSpace(), tasks[2], budget, seed=3, progress=False)
    assert [h["genotype"] for h in rand.history] == fused.history[0]["genotypes"]      # one pool, paired
    n_train = round(0.8 * len(tasks[2].y_train))
    assert rand.weight_steps == budget.pool * random_search_steps(budget, n_train)
    assert rand.weight_steps - 2 < fused.weight_steps <= rand.weight_steps
    assert len(pools) == 1 and len(fused.history) == 1


# ---------------------------------------------------------------------- Budget: checks and presets
@pytest.mark.parametrize("kw,match", [
    pytest.param({"iterations": 0}, r"Budget.iterations must be an int >= 1", id="iterations"),
    pytest.param({"candidates": -1}, r"Budget.candidates must be an int >= 1", id="candidates"),
    pytest.param({"seconds": 0}, r"Budget.seconds must be positive", id="seconds"),
    pytest.param({"schedule": "sha"}, r"Budget.schedule must be one of \('halving', 'paper', 'threshold'\)",
                 id="schedule"),
    pytest.param({"incumbent": "warm", "schedule": "paper"}, r"Budget.incumbent must be one of", id="incumbent"),
    pytest.param({"incumbent": "keep", "schedule": "halving"}, r"'halving' schedule is one FUSE run with no incumbent",
                 id="halving-inc"),
    pytest.param({"weight_loss": "own", "schedule": "paper"}, r"weight_loss applies to the 'threshold' schedule",
                 id="paper-weight-loss"),
    pytest.param({"weight_loss": "alone", "schedule": "threshold"}, r"Budget.weight_loss must be one of",
                 id="weight-loss"),
])
def test_bad_budget(kw, match):
    with pytest.raises(ValueError, match=match):
        Budget(**kw)


def test_presets():
    smoke, gpu = Budget.preset("cpu-smoke"), Budget.preset("gpu")
    assert (smoke.pool, smoke.weight_steps, smoke.channels, smoke.layers) == (8, 16, 8, 1)
    assert (gpu.pool, gpu.weight_steps, gpu.channels, gpu.layers) == (64, 1000, 16, 5)
    assert smoke.schedule == gpu.schedule == S.DEFAULT_SCHEDULE
    assert Budget.preset("gpu", layers=3, schedule="paper") == Budget(**{**gpu.to_dict(), "layers": 3,
                                                                         "schedule": "paper"})
    with pytest.raises(ValueError, match=r"unknown Budget preset 'tpu'; presets are: cpu-smoke, gpu"):
        Budget.preset("tpu")


@pytest.mark.parametrize("argv,want", [
    pytest.param([], {}, id="cpu-smoke-by-default"),
    pytest.param(["--budget", "gpu", "--layers", "3", "--schedule", "paper"], {"layers": 3, "schedule": "paper"},
                 id="gpu-with-overrides"),
])
def test_the_cli_starts_from_a_preset(argv, want):
    from ftdfast.cli import _budget, build_parser
    args = build_parser().parse_args(["dictionary", "build"] + argv)
    preset = "gpu" if "gpu" in argv else "cpu-smoke"
    assert _budget(args) == Budget.preset(preset, **want)


def test_a_budget_recorded_before_schedules_reads_as_the_threshold_schedule():
    old = {"iterations": 2, "candidates": 4, "rounds": 3, "w_steps": 20, "alpha_steps": 200, "batch_size": 64,
           "channels": 8, "layers": 3, "seconds": None, "incumbent": "reinit", "weight_loss": "mixture"}
    assert Budget.from_dict(old) == Budget(**old, schedule="threshold")
    assert Budget.from_dict(Budget().to_dict()) == Budget()
