"""distance_matrix: the orchestration of trainings and Fisher passes, its cache, resume and errors."""
import glob
import os

import numpy as np
import pytest
import torch

import ftdfast
from ftdfast.distance import matrix as matrix_mod
from ftdfast.tasks import Task

EPOCHS = 2
# fixed epochs (no epsilon mode) keeps these tests quick and deterministic; the epsilon mode has its own tests
CONFIG = ftdfast.TrainConfig(epochs=EPOCHS)


@pytest.fixture(scope="module")
def digits():
    return ftdfast.load_dataset("digits").subset(train=400, test=120)


@pytest.fixture(scope="module")
def three_tasks(digits):
    tasks = [Task("zero", (0,), binary=True), Task("six", (6,), binary=True), Task("low", (0, 1, 2), other=True)]
    return [t.build(digits, seed=0) for t in tasks]


@pytest.fixture(scope="module")
def computed(three_tasks, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    m = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, config=CONFIG, cache_dir=cache, progress=False)
    return m, cache


def test_matrix_shape_range_and_statistics(computed):
    m, _ = computed
    assert m.tasks == ["zero", "six", "low"]
    assert m.per_seed.shape == (2, 3, 3)
    assert np.all(np.diag(m.mean) == 0)
    off = m.per_seed[:, ~np.eye(3, dtype=bool)]
    assert np.all((off > 0) & (off <= 1))
    np.testing.assert_allclose(m.mean, m.per_seed.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.std, m.per_seed.std(0, ddof=1), rtol=1e-12)
    assert m.meta["seeds"] == [0, 1] and m.meta["num_outputs"] == 4 and m.meta["head"] == "shared"
    assert set(m.meta["test_accuracy"]) == {"zero", "six", "low"}
    assert m.meta["fisher"] == "exact" and m.meta["fisher_labels"]["rule"].startswith("none: label-free")
    assert {(p["network"], p["data"]) for p in m.meta["fisher_labels"]["pairs"]} == {
        (a, b) for a in m.tasks for b in m.tasks}
    assert [(r["task"], r["seed"]) for r in m.meta["networks"]] == [(t, s) for s in (0, 1) for t in m.tasks]
    assert all(r["epochs"] == EPOCHS and r["stop_reason"] == "epochs" for r in m.meta["networks"])
    assert set(m.meta["seconds"]) == {"train", "fisher", "distance"}


def test_entries_equal_task_distance_of_the_same_networks(computed, three_tasks):
    """Independent path: rebuild N_a, N_b from the cache and call task_distance directly."""
    m, cache = computed
    config = CONFIG
    store = ftdfast.Cache(cache)
    for seed, a, b in [(0, 0, 1), (1, 2, 0), (1, 1, 2)]:
        net_a, _ = ftdfast.get_trained(store, three_tasks[a], "small_cnn", seed, config, num_outputs=4,
                                       progress=False)
        net_b, _ = ftdfast.get_trained(store, three_tasks[b], "small_cnn", seed, config, num_outputs=4,
                                       progress=False)
        want = ftdfast.task_distance(net_a, net_b, three_tasks[b], backend="loop", fisher="exact", progress=False)
        assert m.per_seed[seed, a, b] == pytest.approx(want, rel=1e-6)


def test_asymmetric(computed):
    m, _ = computed
    assert not np.allclose(m.mean, m.mean.T)


def test_rerun_is_served_from_the_cache(computed, three_tasks, monkeypatch):
    m, cache = computed

    def boom(*a, **k):
        raise AssertionError("should have come from the cache")
    monkeypatch.setattr(matrix_mod, "fisher_diagonal", boom)
    monkeypatch.setattr(ftdfast.train, "train_model", boom)
    again = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, config=CONFIG, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.per_seed, m.per_seed)
    # this call spent no Fisher time, but the cost of the items it served is kept
    assert again.meta["seconds"]["fisher"] == 0.0 and again.meta["seconds"]["train"] < m.meta["seconds"]["train"]
    for what in ("fisher", "train"):
        assert m.meta["cost_seconds"][what] > 0
        assert again.meta["cost_seconds"][what] == pytest.approx(m.meta["cost_seconds"][what])


def test_interrupted_run_resumes_and_loses_only_the_item_in_flight(three_tasks, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    real = matrix_mod.fisher_diagonal
    calls = []

    def flaky(*a, **k):
        if len(calls) == 4:
            raise KeyboardInterrupt  # the user pressed ^C (or the machine died) during the 5th Fisher pass
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(matrix_mod, "fisher_diagonal", flaky)
    with pytest.raises(KeyboardInterrupt):
        ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache, progress=False)
    assert len(glob.glob(os.path.join(cache, "fisher", "*.pt"))) == 4
    assert not glob.glob(os.path.join(cache, "**", "*.tmp"), recursive=True)

    counted = []

    def counting(*a, **k):
        counted.append(1)
        return real(*a, **k)
    monkeypatch.setattr(matrix_mod, "fisher_diagonal", counting)
    resumed = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache, progress=False)
    assert len(counted) == 9 - 4 - 0  # 3 x 3 passes (F_bb once per b), 4 were done before the interruption
    fresh = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, progress=False)
    np.testing.assert_allclose(resumed.per_seed, fresh.per_seed, rtol=1e-9)


def test_corrupted_cache_entry_is_reported_and_recomputed(computed, three_tasks, tmp_path):
    m, cache = computed
    import shutil
    copy = str(tmp_path / "cache")
    shutil.copytree(cache, copy)
    victim = sorted(glob.glob(os.path.join(copy, "fisher", "*.pt")))[0]
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        f.write(b"\x00garbage\x00")
    with pytest.warns(RuntimeWarning, match="recomputed|corrupt"):
        again = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, config=CONFIG, cache_dir=copy, progress=False)
    np.testing.assert_allclose(again.per_seed, m.per_seed, rtol=1e-9)


def test_cosine_and_legacy_methods(three_tasks, computed):
    _, cache = computed
    cos = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache, method="cosine",
                                  progress=False)
    fis = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache, progress=False)
    leg = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache, method="legacy",
                                  progress=False)
    np.testing.assert_allclose(leg.per_seed, fis.per_seed ** 2, rtol=1e-9)
    assert np.all((cos.mean >= 0) & (cos.mean <= 1)) and not np.allclose(cos.mean, fis.mean)


def test_a_measure_registered_in_one_line_is_used_by_the_matrix(three_tasks, computed, monkeypatch):
    """A measure is a function plus one line in MEASURES (issue 22): distance_matrix must run that function,
    not fall through to another measure."""
    from ftdfast.distance import MEASURES, cosine_distance
    _, cache = computed
    monkeypatch.setitem(MEASURES, "half_cosine", lambda F_ab, F_bb: 0.5 * cosine_distance(F_ab, F_bb))
    half = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache,
                                   method="half_cosine", progress=False)
    cos = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache, method="cosine",
                                  progress=False)
    np.testing.assert_allclose(half.per_seed, 0.5 * cos.per_seed, rtol=1e-12)


def test_legacy_head_pads_the_smaller_networks(three_tasks, monkeypatch):
    widths = []
    real = matrix_mod.fisher_diagonal

    def spy(model, data, **k):
        widths.append(model(data[0][:1]).shape[-1])
        return real(model, data, **k)
    monkeypatch.setattr(matrix_mod, "fisher_diagonal", spy)
    m = ftdfast.distance_matrix(three_tasks[:1] + three_tasks[2:], "small_cnn", 1, config=CONFIG, head="legacy",
                                progress=False)
    assert sorted(set(widths)) == [2, 4]  # the binary net is padded to 4 logits on the 4-class target
    assert m.meta["num_outputs"] == [2, 4]
    assert np.all(np.isfinite(m.mean)) and 0 < m.mean[0, 1] <= 1 and 0 < m.mean[1, 0] <= 1


def test_padded_logits():
    net = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    z = matrix_mod.PaddedLogits(net, 4)(x)
    assert z.shape == (5, 4) and torch.equal(z[:, :2], net(x)) and torch.all(z[:, 2:] == 0)


@pytest.mark.parametrize("call,match", [
    (lambda t: ftdfast.distance_matrix([], "small_cnn", 1), "task list is empty"),
    (lambda t: ftdfast.distance_matrix([Task("x", (0,), binary=True)], "small_cnn", 1), "not a TaskData"),
    (lambda t: ftdfast.distance_matrix(t, "small_cnn", 0), "seeds must be >= 1"),
    (lambda t: ftdfast.distance_matrix(t, "small_cnn", [1, 1]), "distinct"),
    (lambda t: ftdfast.distance_matrix(t, "small_cnn", 1, method="kl"), r"method='kl' is not one of .*MEASURES"),
    (lambda t: ftdfast.distance_matrix(t, "small_cnn", 1, head="wide"), "head must be"),
    (lambda t: ftdfast.distance_matrix(t, "small_cnn", 1, loss="mse"), "loss comes from the tasks"),
    (lambda t: ftdfast.distance_matrix(t + t[:1], "small_cnn", 1), "unique"),
])
def test_bad_inputs(three_tasks, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(three_tasks)


def test_mixed_input_shapes_are_refused(three_tasks):
    other = ftdfast.from_tensors(torch.rand(20, 1, 6, 6), torch.arange(20) % 2, torch.rand(10, 1, 6, 6),
                                 torch.arange(10) % 2)
    small = Task("tiny").build(other)
    with pytest.raises(ValueError, match="same input shape"):
        ftdfast.distance_matrix([three_tasks[0], small], "small_cnn", 1)


def test_one_target_column_equals_the_full_matrix_column(computed, three_tasks, monkeypatch):
    m, cache = computed
    col = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, config=CONFIG, cache_dir=cache, targets=[2],
                                  progress=False)
    np.testing.assert_array_equal(col.per_seed[:, :, 2], m.per_seed[:, :, 2])
    assert np.all(np.isnan(col.per_seed[:, :, :2])) and col.closest("low") == m.closest("low")
    with pytest.raises(ValueError, match="targets must be"):
        ftdfast.distance_matrix(three_tasks, "small_cnn", 1, targets=[3])


def test_regression_tasks_with_the_autoencoder(digits):
    from ftdfast.tasks import RegressionTask
    tasks = [RegressionTask("ae", "autoencode").build(digits.subset(train=150, test=40)),
             RegressionTask("edges", "edges").build(digits.subset(train=150, test=40))]
    m = ftdfast.distance_matrix(tasks, "autoencoder", 1, epochs=1, progress=False)
    assert m.meta["loss"] == "mse" and m.meta["num_outputs"] is None
    assert 0 < m.mean[0, 1] <= 1 and 0 < m.mean[1, 0] <= 1
    assert m.meta["test_accuracy"] == {"ae": [None], "edges": [None]}
    assert m.meta["fisher"] == "exact" and "Gauss-Newton" in m.meta["fisher_labels"]["rule"]


def test_empirical_fisher_records_which_labels_each_network_received(three_tasks, computed):
    _, cache = computed
    m = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, cache_dir=cache, fisher="empirical",
                                progress=False)
    pairs = {(p["network"], p["data"]): p["labels"] for p in m.meta["fisher_labels"]["pairs"]}
    assert pairs[("zero", "low")] == "low labels 0..3" and pairs[("low", "six")] == "six labels 0..1"
    assert "output indices" in m.meta["fisher_labels"]["rule"]


# ------------------------------------------------------------------------ cache keys
def _relabelled(digits):
    return [t.build(digits, seed=0) for t in (Task("zero", (0,), binary=True), Task("six", (6,), binary=True),
                                               Task("low", (2, 1, 0), other=True))]


KEY_CASES = {
    # id: (options of run A, options of run B); both share one cache, B must get its own result
    "backend-legacy-after-default": ({"fisher": "empirical"}, {"fisher": "empirical", "backend": "legacy"}),
    "default-after-backend-legacy": ({"fisher": "empirical", "backend": "legacy"}, {"fisher": "empirical"}),
    "legacy-backend-batch-size": ({"fisher": "empirical", "backend": "legacy", "batch_size": 16},
                                  {"fisher": "empirical", "backend": "legacy", "batch_size": 64}),
    "fisher-kind": ({"fisher": "empirical"}, {"fisher": "exact"}),
    "mc-seed": ({"fisher": "mc", "mc_seed": 0}, {"fisher": "mc", "mc_seed": 1}),
    "mc-generator": ({"fisher": "mc", "generator": 1}, {"fisher": "mc", "generator": 2}),
    "head-policy": ({"head": "shared"}, {"head": "legacy"}),
    "training-options": ({}, {"config": ftdfast.TrainConfig(epochs=4, epsilon=0.5, until_epsilon=True)}),
    "fisher-split": ({"config": ftdfast.TrainConfig(epochs=EPOCHS, validation=0.25)},
                     {"config": ftdfast.TrainConfig(epochs=EPOCHS, validation=0.25), "fisher_data": "validation"}),
    "label-mapping": ({}, {"relabel": True}),
}


def _run(tasks, digits, cache, options):
    options = dict(options)
    if options.pop("relabel", False):
        tasks = _relabelled(digits)
    if "generator" in options:
        options["generator"] = torch.Generator().manual_seed(options["generator"])
    options.setdefault("config", CONFIG)
    return ftdfast.distance_matrix(tasks, "small_cnn", 1, cache_dir=cache, targets=[0, 2], progress=False,
                                   **options)


@pytest.mark.parametrize("case", list(KEY_CASES), ids=list(KEY_CASES))
def test_runs_differing_in_one_option_share_a_cache_without_mixing(case, three_tasks, digits, tmp_path):
    a_opts, b_opts = KEY_CASES[case]
    cache = str(tmp_path / "shared")
    a = _run(three_tasks, digits, cache, a_opts)
    b = _run(three_tasks, digits, cache, b_opts)
    alone = _run(three_tasks, digits, None, b_opts)  # B with no cache at all: what B must give
    cols = np.s_[:, :, [0, 2]]
    np.testing.assert_allclose(b.per_seed[cols], alone.per_seed[cols], rtol=1e-9, atol=1e-12)
    assert not np.allclose(a.per_seed[cols], b.per_seed[cols], rtol=1e-6, atol=0)
    again = _run(three_tasks, digits, cache, a_opts)  # and A still gets A's
    np.testing.assert_array_equal(again.per_seed, a.per_seed)


def test_mc_labels_come_from_the_seed_not_the_order_of_computation(three_tasks, tmp_path):
    one = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, fisher="mc", targets=[2],
                                  progress=False)
    full = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, fisher="mc", progress=False)
    np.testing.assert_array_equal(one.per_seed[:, :, 2], full.per_seed[:, :, 2])
    g = torch.Generator().manual_seed(5)
    state = g.get_state().clone()
    ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, fisher="mc", generator=g, targets=[2],
                            progress=False)
    assert torch.equal(g.get_state(), state)  # the caller's generator is only read


# ------------------------------------------------------------------------ epsilon networks
def test_networks_missing_epsilon_are_named_and_strict_raises(three_tasks):
    config = ftdfast.TrainConfig(epochs=1, epsilon=0.0, until_epsilon=True)
    with pytest.warns(RuntimeWarning, match=r"3 network\(s\) missed 1 - epsilon = 1\.0000:\n  zero \(seed 0\): "
                                            r"the network for task 'zero' reached test accuracy"):
        m = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=config, targets=[0], progress=False)
    assert [r["epsilon_ok"] for r in m.meta["networks"]] == [False] * 3 and len(m.meta["epsilon_misses"]) == 3
    with pytest.raises(RuntimeError, match=r"(?s)low \(seed 0\).*strict=True"):
        ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=config, targets=[0], strict=True,
                                progress=False)


def test_default_config_is_the_epsilon_mode():
    c = matrix_mod.DEFAULT_CONFIG
    assert c.until_epsilon and c.epsilon == 0.02 and c.epochs >= 10 and c.check_split == "test"


def test_fisher_on_the_validation_split_needs_one(three_tasks):
    with pytest.raises(ValueError, match="validation > 0"):
        ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, fisher_data="validation")
    with pytest.raises(ValueError, match="fisher_data must be"):
        ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, fisher_data="train")
    with pytest.raises(ValueError, match="fisher must be"):
        ftdfast.distance_matrix(three_tasks, "small_cnn", 1, config=CONFIG, fisher="fim")
