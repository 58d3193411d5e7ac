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
    m = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, epochs=EPOCHS, cache_dir=cache, progress=False)
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


def test_entries_equal_task_distance_of_the_same_networks(computed, three_tasks):
    """Independent path: rebuild N_a, N_b from the cache and call task_distance directly."""
    m, cache = computed
    config = ftdfast.TrainConfig(epochs=EPOCHS)
    store = ftdfast.Cache(cache)
    for seed, a, b in [(0, 0, 1), (1, 2, 0), (1, 1, 2)]:
        net_a, _ = ftdfast.get_trained(store, three_tasks[a], "small_cnn", seed, config, num_outputs=4,
                                       progress=False)
        net_b, _ = ftdfast.get_trained(store, three_tasks[b], "small_cnn", seed, config, num_outputs=4,
                                       progress=False)
        want = ftdfast.task_distance(net_a, net_b, three_tasks[b], backend="loop", progress=False)
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
    again = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, epochs=EPOCHS, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.per_seed, m.per_seed)


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
        ftdfast.distance_matrix(three_tasks, "small_cnn", 1, epochs=EPOCHS, cache_dir=cache, progress=False)
    assert len(glob.glob(os.path.join(cache, "fisher", "*.pt"))) == 4
    assert not glob.glob(os.path.join(cache, "**", "*.tmp"), recursive=True)

    counted = []

    def counting(*a, **k):
        counted.append(1)
        return real(*a, **k)
    monkeypatch.setattr(matrix_mod, "fisher_diagonal", counting)
    resumed = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, epochs=EPOCHS, cache_dir=cache, progress=False)
    assert len(counted) == 9 - 4 - 0  # 3 x 3 passes (F_bb once per b), 4 were done before the interruption
    fresh = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, epochs=EPOCHS, progress=False)
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
        again = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, epochs=EPOCHS, cache_dir=copy, progress=False)
    np.testing.assert_allclose(again.per_seed, m.per_seed, rtol=1e-9)


def test_cosine_and_legacy_methods(three_tasks, computed):
    _, cache = computed
    cos = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, epochs=EPOCHS, cache_dir=cache, method="cosine",
                                  progress=False)
    fis = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, epochs=EPOCHS, cache_dir=cache, progress=False)
    leg = ftdfast.distance_matrix(three_tasks, "small_cnn", 1, epochs=EPOCHS, cache_dir=cache, method="legacy",
                                  progress=False)
    np.testing.assert_allclose(leg.per_seed, fis.per_seed ** 2, rtol=1e-9)
    assert np.all((cos.mean >= 0) & (cos.mean <= 1)) and not np.allclose(cos.mean, fis.mean)


def test_legacy_head_pads_the_smaller_networks(three_tasks, monkeypatch):
    widths = []
    real = matrix_mod.fisher_diagonal

    def spy(model, data, **k):
        widths.append(model(data[0][:1]).shape[-1])
        return real(model, data, **k)
    monkeypatch.setattr(matrix_mod, "fisher_diagonal", spy)
    m = ftdfast.distance_matrix(three_tasks[:1] + three_tasks[2:], "small_cnn", 1, epochs=EPOCHS, head="legacy",
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
    (lambda t: ftdfast.distance_matrix(t, "small_cnn", 1, method="kl"), "method"),
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
    col = ftdfast.distance_matrix(three_tasks, "small_cnn", 2, epochs=EPOCHS, cache_dir=cache, targets=[2],
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
