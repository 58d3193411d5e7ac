"""FUSE: the mixture, the alpha phase, the choice on digits, determinism, checkpoints, input errors."""
import copy
import dataclasses
import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ftdfast.nas import (FuseConfig, FuseMixture, Genotype, Network, SearchSpace, fuse, split_train_val,
                         uniform_genotype)

GOOD = Genotype(3, ((("conv_3x3", 0), ("conv_3x3", 1)),
                    (("conv_3x3", 1), ("identity", 2)),
                    (("max_pool_3x3", 2), ("conv_3x3", 3))))
ZERO = uniform_genotype("zero", 3)
FAST = dict(channels=2, layers=1, batch_size=16, progress=False)
CONFIG_FIELDS = {f.name for f in dataclasses.fields(FuseConfig)}


def run(candidates, train, val, **kw):
    """run() with the FuseConfig fields of ``kw`` gathered into its config."""
    config = FuseConfig(**{k: kw.pop(k) for k in list(kw) if k in CONFIG_FIELDS})
    return fuse(candidates, train, val, config, **kw)


@pytest.fixture(scope="module")
def small(digits):
    """600 digits split 450 / 150 (validation carved from the training part)."""
    x, y = digits
    return split_train_val(x[:600], y[:600], fraction=0.25, seed=0)


def _nets(k, **kw):
    torch.manual_seed(0)
    return [Network(g, **{**dict(channels=2, layers=1, num_classes=10, in_channels=1), **kw})
            for g in SearchSpace(node_counts=(3,)).sample_many(k, 1)]


# ---------------------------------------------------------------------- the mixture
@pytest.mark.parametrize("batched", [True, False])
def test_one_hot_alpha_gives_that_candidate(batched):
    nets = _nets(3)
    mix = FuseMixture(nets, batched=batched).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        mix.alpha.copy_(torch.tensor([float("-inf"), 0.0, float("-inf")]))
        assert torch.equal(mix.weights(), torch.tensor([0.0, 1.0, 0.0]))
        assert torch.allclose(mix(x), nets[1](x), rtol=0, atol=1e-6)
        mix.alpha.copy_(torch.tensor([0.3, -1.0, 2.0]))
        w = torch.softmax(mix.alpha, 0)
        assert torch.allclose(mix(x), sum(w[k] * nets[k](x) for k in range(3)), atol=1e-6)


def test_single_candidate_mixture_is_the_candidate():
    net = _nets(1)[0].eval()
    mix = FuseMixture([net], batched=True)
    with torch.no_grad():
        mix.alpha.fill_(-3.7)
        x = torch.randn(4, 1, 8, 8)
        assert torch.equal(mix(x), net(x))


# ---------------------------------------------------------------------- the alpha phase
def test_alpha_phase_changes_no_weight_and_no_buffer(small):
    train, val = small
    nets = _nets(3)
    before = [copy.deepcopy(n.state_dict()) for n in nets]
    res = run(nets, train, val, rounds=1, w_steps=0, alpha_steps=4, **FAST)
    for net, sd in zip(res.candidates, before):
        for name, t in net.state_dict().items():
            assert torch.equal(t, sd[name]), f"{name} changed during the alpha phase"
    assert max(abs(a) for a in res.alpha) > 0, "alpha did not move"
    assert res.rounds_run == 1 and res.stop_reason == "rounds"


def test_weight_phase_trains_the_weights_but_not_alpha(small):
    train, val = small
    nets = _nets(2)
    before = copy.deepcopy(nets[0].classifier.weight.detach())
    res = run(nets, train, val, rounds=1, w_steps=3, alpha_steps=1, alpha_lr=0.0, tol=1e-3, **FAST)
    assert not torch.equal(res.candidates[0].classifier.weight, before)
    assert res.alpha == [0.0, 0.0] and res.stop_reason == "converged"


# ---------------------------------------------------------------------- the choice
def test_fuse_picks_the_good_candidate_over_all_zero_cells(small):
    train, val = small
    # threshold 0.6: a constant-logit (all-zero) candidate in the mixture tempers an overconfident good one, so
    # alpha can settle below 0.8 on the good cell (0.66-0.72 here, depending on the CPU's kernels)
    res = run([ZERO, GOOD, ZERO], train, val, channels=4, layers=1, rounds=6, w_steps=25, alpha_steps=10,
               w_lr=0.01, alpha_lr=0.2, threshold=0.6, batch_size=32, seed=0, progress=False)
    assert res.best_index == 1 and res.best_genotype == GOOD
    assert res.softmax_history[-1][1] >= 0.6 and res.stop_reason == "threshold"
    assert res.val_accuracy_history[-1][1] > res.val_accuracy_history[-1][0] + 0.2
    assert len(res.alpha_history) == len(res.softmax_history) == res.rounds_run + 1
    assert res.softmax_history[0] == pytest.approx([1 / 3] * 3)
    json.dumps(res.to_dict())


def test_seeded_runs_repeat_and_batched_matches_sequential(small):
    train, val = small
    gens = SearchSpace(node_counts=(3,)).sample_many(3, 7)
    kw = dict(rounds=2, w_steps=3, alpha_steps=2, alpha_lr=0.3, seed=5, **FAST)
    a, b = run(gens, train, val, **kw), run(gens, train, val, **kw)
    assert a.alpha_history == b.alpha_history
    for na, nb in zip(a.candidates, b.candidates):
        assert all(torch.equal(p, q) for p, q in zip(na.state_dict().values(), nb.state_dict().values()))
    s = run(gens, train, val, batched=False, **kw)
    assert torch.allclose(torch.tensor(s.alpha_history), torch.tensor(a.alpha_history), atol=1e-4)


def test_stop_reasons(small):
    train, val = small
    one = run([GOOD], train, val, rounds=3, w_steps=1, alpha_steps=1, threshold=0.9, **{**FAST, "progress": True})
    assert one.stop_reason == "threshold" and one.rounds_run == 1 and one.best_index == 0
    capped = run([GOOD, ZERO], train, val, rounds=2, w_steps=1, alpha_steps=1, **FAST)
    assert capped.stop_reason == "rounds" and capped.rounds_run == 2


# ---------------------------------------------------------------------- weight_loss="own"
def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_own_weight_loss_trains_each_candidate_as_if_alone(small):
    """With "own", candidate k's gradient is its own cross-entropy's: its weights after FUSE with others equal
    its weights after FUSE alone (the same batches), and alpha's learning rate changes no weight."""
    train, val = small
    kw = dict(rounds=2, w_steps=4, alpha_steps=3, seed=3, weight_loss="own", batched=False, **FAST)
    nets = _nets(3)
    alone = copy.deepcopy(nets[1])
    together = run(nets, train, val, **kw)
    single = run([alone], train, val, **kw)
    for (name, a), b in zip(_state(together.candidates[1]).items(), _state(single.candidates[0]).values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name
    frozen = run(_nets(3), train, val, **{**kw, "alpha_lr": 0.0})
    for na, nb in zip(together.candidates, frozen.candidates):
        for (name, a), b in zip(_state(na).items(), _state(nb).values()):
            assert torch.equal(a, b), f"alpha changed weight {name} under weight_loss='own'"
    assert frozen.alpha == [0.0, 0.0, 0.0] and together.alpha != frozen.alpha


def test_own_weight_loss_records_the_mean_own_loss_and_runs_every_round(small):
    train, val = small
    res = run([GOOD, ZERO], train, val, rounds=3, w_steps=2, alpha_steps=50, alpha_lr=0.5, weight_loss="own", **FAST)
    assert res.stop_reason == "rounds" and res.rounds_run == 3
    assert max(res.weights) >= 0.5
    assert all(0 < v < 10 for v in res.train_loss_history)
    mixture = run([GOOD, ZERO], train, val, rounds=3, w_steps=2, alpha_steps=50, alpha_lr=0.5, threshold=0.5,
                  **FAST)
    assert mixture.stop_reason == "threshold" and mixture.rounds_run < 3


def test_checkpoint_of_an_earlier_version_is_refused_clearly(small, tmp_path):
    """Version 3 stores a FuseConfig in the identity; a version-2 file (fuse's keyword arguments) cannot resume."""
    train, val = small
    path = str(tmp_path / "old.pt")
    run([GOOD, ZERO], train, val, rounds=1, w_steps=1, alpha_steps=1, checkpoint=path, **FAST)
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == 3 and "config" in json.loads(payload["identity"])
    payload["version"] = 2
    torch.save(payload, path)
    with pytest.raises(ValueError, match="FUSE checkpoint version 2; this ftdfast reads version 3: delete it"):
        run([GOOD, ZERO], train, val, rounds=1, w_steps=1, alpha_steps=1, checkpoint=path, **FAST)


def test_own_and_mixture_checkpoints_are_not_interchangeable(small, tmp_path):
    train, val = small
    path = str(tmp_path / "f.pt")
    run([GOOD, ZERO], train, val, rounds=1, w_steps=1, alpha_steps=1, checkpoint=path, **FAST)
    with pytest.raises(ValueError, match="different run"):
        run([GOOD, ZERO], train, val, rounds=1, w_steps=1, alpha_steps=1, checkpoint=path, weight_loss="own",
             **FAST)


# ---------------------------------------------------------------------- checkpoints
def test_resume_from_checkpoint_equals_an_uninterrupted_run(small, tmp_path):
    train, val = small
    gens = SearchSpace(node_counts=(3,)).sample_many(2, 3)
    kw = dict(w_steps=2, alpha_steps=2, alpha_lr=0.3, seed=1, **FAST)
    full = run(gens, train, val, rounds=3, **kw)
    path = tmp_path / "fuse.ckpt"
    first = run(gens, train, val, rounds=1, checkpoint=path, **kw)
    assert first.rounds_run == 1 and path.exists()
    resumed = run(gens, train, val, rounds=3, checkpoint=path, **kw)
    assert resumed.rounds_run == 3
    assert resumed.alpha_history == full.alpha_history
    for nf, nr in zip(full.candidates, resumed.candidates):
        assert all(torch.equal(p, q) for p, q in zip(nf.state_dict().values(), nr.state_dict().values()))
    again = run(gens, train, val, rounds=3, checkpoint=path, **kw)      # finished: nothing left to run
    assert again.alpha_history == full.alpha_history
    assert os.listdir(tmp_path) == ["fuse.ckpt"]                           # no temporary files left


def test_checkpoint_of_another_run_is_refused(small, tmp_path):
    train, val = small
    path = tmp_path / "fuse.ckpt"
    kw = dict(rounds=1, w_steps=1, alpha_steps=1, checkpoint=path, **FAST)
    run([GOOD, ZERO], train, val, **kw)
    with pytest.raises(ValueError, match=r"written for a different run \(differs in: candidates\)"):
        run([ZERO, GOOD], train, val, **kw)
    with pytest.raises(ValueError, match=r"differs in: config"):
        run([GOOD, ZERO], train, val, **{**kw, "w_lr": 0.5})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the FUSE checkpoint"):
        run([GOOD, ZERO], train, val, **kw)


# ---------------------------------------------------------------------- input errors
def test_input_errors(small):
    train, val = small
    with pytest.raises(ValueError, match="at least one candidate"):
        run([], train, val, **FAST)
    with pytest.raises(ValueError, match=r"num_classes=5 but the labels go up to 9"):
        run([GOOD], train, val, num_classes=5, **FAST)
    with pytest.raises(ValueError, match=r"in_channels=3 but the images have 1 channels"):
        run([GOOD], train, val, in_channels=3, **FAST)
    with pytest.raises(ValueError, match=r"candidate 1 \(Sequential\) returns \(2, 3\).*expected \(2, 10\)"):
        run([GOOD, nn.Sequential(nn.Flatten(), nn.Linear(64, 3))], train, val, **FAST)
    with pytest.raises(ValueError, match=r"candidate 0 \(Network\) fails on inputs of shape \(2, 1, 8, 8\)"):
        run([Network(GOOD, 2, 1, 10, in_channels=3)], train, val, **FAST)
    with pytest.raises(ValueError, match=r"val_data images have shape \(1, 4, 4\)"):
        run([GOOD], train, (val[0][:, :, :4, :4], val[1]), **FAST)
    with pytest.raises(ValueError, match=r"train_data must be a pair \(x, y\)"):
        run([GOOD], train[0], val, **FAST)
    with pytest.raises(ValueError, match=r"train_data: x has 450 samples but y has 449"):
        run([GOOD], (train[0], train[1][:-1]), val, **FAST)
    with pytest.raises(TypeError, match="candidate 0 is a int"):
        run([3], train, val, **FAST)
    with pytest.raises(ValueError, match="unknown operation"):
        run([{"num_nodes": 3, "edges": [[["conv_9x9", 0], ["identity", 1]]] * 3}], train, val, **FAST)


def test_split_train_val(digits):
    x, y = digits[0][:103], digits[1][:103]
    (xt, yt), (xv, yv) = split_train_val(x, y, fraction=0.2, seed=4)
    assert len(yv) == 21 and len(yt) == 82
    x_id = torch.arange(103, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)   # sample numbers
    (it, _), (iv, _) = split_train_val(x_id, y, fraction=0.2, seed=4)
    ids_t, ids_v = set(it[:, 0, 0, 0].tolist()), set(iv[:, 0, 0, 0].tolist())
    assert not ids_t & ids_v and len(ids_t | ids_v) == 103                  # a partition
    again = split_train_val(x, y, fraction=0.2, seed=4)
    assert torch.equal(again[1][0], xv) and torch.equal(again[0][1], yt)
    assert not torch.equal(split_train_val(x, y, fraction=0.2, seed=5)[1][1], yv)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        split_train_val(x, y, fraction=1.0)


# ---------------------------------------------------------------------- non-finite values (issue 12, item 6)
def test_nan_training_data_raises_naming_round_and_step(small):
    (x, y), val = small
    x = x.clone()
    x[7] = float("nan")
    with pytest.raises(RuntimeError, match=r"non-finite training loss nan at round 1/2, weight step \d+/40"):
        run([GOOD, ZERO], (x, y), val, rounds=2, w_steps=40, alpha_steps=5, **FAST)


def test_nan_validation_data_raises_naming_round(small):
    train, (xv, yv) = small
    xv = xv.clone()
    xv[3, 0, 2, 2] = float("inf")
    with pytest.raises(RuntimeError, match=r"candidate\(s\) \[0[^\]]*\] give non-finite validation logits at round "
                                           r"1/2 \(alpha phase"):
        run([GOOD, ZERO], train, (xv, yv), rounds=2, w_steps=2, alpha_steps=5, **FAST)


# ---------------------------------------------------------------------- the alpha phase converges
def test_alpha_fits_the_fixed_logits_to_convergence(small):
    """With the weights frozen (w_steps=0) the alpha phase minimizes the mixture's validation loss over alpha;
    compare with an independent float64 LBFGS fit of the same objective."""
    train, val = small
    nets = _nets(3)
    res = run(nets, train, val, rounds=1, w_steps=0, alpha_steps=3000, alpha_lr=0.05, alpha_tol=1e-7,
               threshold=1.0, **FAST)
    with torch.no_grad():
        logits = torch.stack([n.eval().double()(val[0].double()) for n in nets], 1)
    a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(FuseMixture.mix(logits, torch.softmax(a, 0)), val[1])
        loss.backward()
        return loss
    opt.step(closure)
    want = float(closure().detach())
    assert res.val_loss_history[-1] == pytest.approx(want, abs=1e-4)        # float32 logits vs float64
    assert res.alpha_steps_history[0] < 3000                                 # stopped on alpha_tol
    own = [float(F.cross_entropy(logits[:, k], val[1])) for k in range(3)]
    assert res.candidate_val_loss_history[0] == pytest.approx(own, abs=1e-4)


def test_result_keeps_every_candidates_validation_loss(small):
    train, val = small
    res = run([GOOD, ZERO, GOOD], train, val, rounds=2, w_steps=2, alpha_steps=5, **FAST)
    assert len(res.candidate_val_loss_history) == len(res.val_accuracy_history) == 2
    assert all(len(v) == 3 for v in res.candidate_val_loss_history)
    d = res.to_dict()
    assert d["candidate_val_loss_history"] == res.candidate_val_loss_history
    assert d["alpha_steps_history"] == res.alpha_steps_history and all(1 <= s <= 5 for s in d["alpha_steps_history"])


@pytest.mark.parametrize("kw,match", [({"alpha_tol": -1.0}, "alpha_tol must be"), ({"w_lr": float("nan")}, "w_lr"),
                                      ({"val_batch_size": 0}, "val_batch_size must be an int >= 1"),
                                      ({"weight_loss": "sum"}, "weight_loss must be one of")])
def test_bad_settings(small, kw, match):
    train, val = small
    with pytest.raises(ValueError, match=match):
        run([GOOD], train, val, **{**FAST, **kw})
