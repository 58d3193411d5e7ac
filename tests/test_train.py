"""ftdfast.train: TrainConfig, seed_everything, train_model, evaluate and get_trained."""
import math
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast.train as train_mod
from ftdfast.cache import Cache
from ftdfast.models import build_model
from ftdfast.train import (TrainConfig, TrainResult, _batches, _local_augment, evaluate, get_trained,
                           seed_everything, train_model)
from tests.fake_taskdata import digits, one_thread, random_classification, random_regression

FAST = TrainConfig(epochs=1, batch_size=16)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def fresh(arch, data, seed=0, **options):
    seed_everything(seed)
    c, h = data.x_train.shape[1], data.x_train.shape[-1]
    k = data.num_classes or data.y_train.shape[1]
    return build_model(arch, in_channels=c, num_classes=k, input_size=h, **options)


def states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------- TrainConfig
def test_config_defaults_and_dict_round_trip():
    c = TrainConfig()
    assert c.to_dict() == dict(epochs=2, batch_size=128, lr=1e-3, augment=False, epsilon=None, on_epsilon="warn",
                               weight_decay=0.0, until_epsilon=False, patience=3, validation=0.0)
    d = TrainConfig(epochs=np.int64(3), lr=1, epsilon=0)
    assert TrainConfig.from_dict(d.to_dict()) == d
    assert type(d.epochs) is int and type(d.lr) is float and type(d.epsilon) is float


@pytest.mark.parametrize("kw,match", [
    (dict(epochs=-1), "epochs must be an int >= 0"),
    (dict(epochs=1.5), "epochs must be an int >= 0"),
    (dict(epochs=True), "epochs must be an int >= 0"),
    (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(lr=0), "lr must be a finite number > 0"),
    (dict(lr=float("inf")), "lr must be a finite number > 0"),
    (dict(augment="yes"), "augment must be True or False"),
    (dict(epsilon=1.5), r"epsilon must be None or a number in \[0, 1\]"),
    (dict(epsilon=-0.1), r"epsilon must be None or a number in \[0, 1\]"),
    (dict(on_epsilon="ignore"), "on_epsilon must be one of"),
    (dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_config_is_frozen():
    with pytest.raises(Exception):
        TrainConfig().epochs = 3


def test_seed_everything_seeds_python_numpy_and_torch():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(7)
    a = draw()
    seed_everything(7)
    assert draw() == a
    seed_everything(8)
    assert draw() != a
    with pytest.raises(TypeError, match="int seed"):
        seed_everything(1.0)


# ------------------------------------------------------------------------------------- training
def test_small_cnn_learns_digits_in_two_epochs():
    data = digits()
    model = fresh("small_cnn", data)
    before = evaluate(model, data.x_test, data.y_test, loss="cross_entropy")
    result = train_model(model, data, TrainConfig(epochs=2, batch_size=32), progress=False)
    assert before["accuracy"] < 0.3  # chance is 0.1
    assert result.test_accuracy > 0.8
    assert result.test_loss < before["loss"]
    assert len(result.train_loss_history) == 2 and result.train_loss_history[1] < result.train_loss_history[0]
    assert result.seconds > 0 and result.epsilon_ok is None and result.from_cache is False


def test_training_is_deterministic_given_the_seed():
    data = random_classification()
    a, b, c = fresh("lenet", data, seed=1), fresh("lenet", data, seed=1), fresh("lenet", data, seed=2)
    assert states_equal(a, b) and not states_equal(a, c)
    ra = train_model(a, data, FAST, seed=1, progress=False)
    rb = train_model(b, data, FAST, seed=1, progress=False)
    assert states_equal(a, b) and ra.train_loss_history == rb.train_loss_history
    d = fresh("lenet", data, seed=1)
    train_model(d, data, FAST, seed=3, progress=False)  # same init, other shuffling
    assert not states_equal(a, d)


def test_training_with_augmentation_is_deterministic_and_different():
    data = random_classification(size=8)
    cfg = TrainConfig(epochs=1, batch_size=8, augment=True)
    a, b, c = (fresh("small_cnn", data) for _ in range(3))
    train_model(a, data, cfg, progress=False)
    train_model(b, data, cfg, progress=False)
    train_model(c, data, FAST.__class__(epochs=1, batch_size=8), progress=False)
    assert states_equal(a, b) and not states_equal(a, c)


def test_model_is_returned_in_eval_mode_with_batchnorm():
    data = random_classification(size=8)
    model = fresh("resnet18", data, width=0.125)
    train_model(model, data, FAST, progress=False)
    assert not any(m.training for m in model.modules())


def test_a_lone_last_sample_joins_the_previous_batch():
    assert _batches(33, 16) == [(0, 16), (16, 33)]
    assert _batches(32, 16) == [(0, 16), (16, 32)]
    assert _batches(1, 16) == [(0, 1)]
    data = random_classification(n_train=17, size=8)  # vgg16 on 8x8 ends on 1x1 maps: batch of one fails
    train_model(fresh("vgg16", data, width=0.0625), data, TrainConfig(epochs=1, batch_size=8), progress=False)


def test_regression_with_the_autoencoder():
    data = random_regression()
    model = fresh("autoencoder", data, width=0.25)
    before = evaluate(model, data.x_test, data.y_test, loss="mse")["loss"]
    result = train_model(model, data, TrainConfig(epochs=5, batch_size=8, lr=3e-3, epsilon=0.1), progress=False)
    assert result.test_accuracy is None and result.epsilon_ok is None
    assert result.test_loss < before


def test_augment_is_refused_for_pixel_targets():
    data = random_regression()
    with pytest.raises(ValueError, match="augment=True .* regression"):
        train_model(fresh("autoencoder", data, width=0.25), data, TrainConfig(augment=True), progress=False)


def test_non_finite_loss_names_epoch_and_step():
    data = random_classification(n_train=40, size=8)
    x = data.x_train.clone()
    x[:] = float("nan")
    bad = type(data)(data.task, x, data.y_train, data.x_test, data.y_test, data.num_classes)
    with pytest.raises(RuntimeError, match=r"non-finite training loss nan .* epoch 1/2, step 1/3"):
        train_model(fresh("small_cnn", data), bad, TrainConfig(epochs=2, batch_size=16), progress=False)


def test_too_narrow_head_and_unknown_loss_are_refused():
    data = random_classification(num_classes=3, size=8)
    narrow = build_model("small_cnn", in_channels=3, num_classes=2, input_size=8)
    with pytest.raises(ValueError, match="2 outputs but task 'random' has 3 classes"):
        train_model(narrow, data, FAST, progress=False)
    odd = type(data)(data.task, data.x_train, data.y_train, data.x_test, data.y_test, 3, loss="hinge")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        train_model(narrow, odd, FAST, progress=False)


# ------------------------------------------------------------------------------------- epsilon
def test_epsilon_miss_warns_with_the_numbers():
    data = random_classification(size=8)
    with pytest.warns(RuntimeWarning, match=r"test accuracy 0\.\d{4} < 1 - epsilon = 1\.0000"):
        result = train_model(fresh("small_cnn", data), data, TrainConfig(epochs=1, epsilon=0.0), progress=False)
    assert result.epsilon_ok is False


def test_epsilon_miss_raises_when_asked():
    data = random_classification(size=8)
    with pytest.raises(RuntimeError, match="epsilon = 0.0"):
        train_model(fresh("small_cnn", data), data, TrainConfig(epochs=1, epsilon=0.0, on_epsilon="raise"),
                    progress=False)


def test_epsilon_met_is_recorded_silently():
    data = random_classification(size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = train_model(fresh("small_cnn", data), data, TrainConfig(epochs=1, epsilon=1.0,
                                                                          on_epsilon="raise"), progress=False)
    assert result.epsilon_ok is True


def test_epsilon_mode_stops_as_soon_as_the_target_is_reached():
    """Stop on the first epoch whose check accuracy reaches 1 - epsilon; the check accuracy is the test accuracy."""
    data = digits(600, 200)
    config = TrainConfig(epochs=30, batch_size=32, epsilon=0.1, until_epsilon=True)
    result = train_model(fresh("small_cnn", data), data, config, progress=False)
    assert result.stop_reason == "epsilon" and result.epsilon_ok is True
    assert result.epochs_run == len(result.check_history) == len(result.train_loss_history) < 30
    assert result.check_history[-1] >= 0.9 > max(result.check_history[:-1], default=0.0)
    assert result.check_accuracy == pytest.approx(result.test_accuracy)


def test_epsilon_mode_stops_on_a_plateau_keeps_the_best_epoch_and_names_the_network():
    data = random_classification(size=8)  # random labels: the test accuracy cannot reach 1
    config = TrainConfig(epochs=40, batch_size=16, epsilon=0.0, until_epsilon=True, patience=2)
    model = fresh("small_cnn", data)
    with pytest.warns(RuntimeWarning, match=r"task 'random'.*after \d+ epoch\(s\), stopped by plateau"):
        result = train_model(model, data, config, progress=False)
    assert result.stop_reason == "plateau" and result.epsilon_ok is False and result.epochs_run < 40
    assert result.test_accuracy == pytest.approx(max(result.check_history))


def test_validation_split_is_held_out_and_judges_epsilon():
    data = digits(600, 200)
    config = TrainConfig(epochs=1, batch_size=32, epsilon=1.0, validation=0.25)
    kept, held = train_mod.validation_split(600, 0.25)
    assert len(held) == 150 and len(kept) == 450 and not set(kept.tolist()) & set(held.tolist())
    x_check, _ = train_mod.check_data(data, config)
    assert torch.equal(x_check, data.x_train[held])
    seen = []
    model = fresh("small_cnn", data)
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]) if m.training else None)
    result = train_model(model, data, config, progress=False)
    handle.remove()
    assert sum(seen) == 450  # one epoch over the kept samples only
    want = evaluate(model, data.x_train[held], data.y_train[held], loss="cross_entropy")["accuracy"]
    assert result.check_accuracy == pytest.approx(want)


@pytest.mark.parametrize("kw, match", [
    ({"until_epsilon": True}, "set epsilon"),
    ({"patience": 0}, "patience"),
    ({"validation": 1.0}, "validation"),
])
def test_epsilon_mode_options_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


# ------------------------------------------------------------------------------------- evaluate
def test_evaluate_matches_a_direct_computation_with_awkward_batches():
    data = random_classification(n_test=23, size=8)
    model = fresh("small_cnn", data).eval()
    got = evaluate(model, data.x_test, data.y_test, loss="cross_entropy", batch_size=5)
    with torch.no_grad():
        out = model(data.x_test)
    assert got["accuracy"] == int((out.argmax(1) == data.y_test).sum()) / 23
    assert got["loss"] == pytest.approx(float(F.cross_entropy(out, data.y_test)), rel=1e-5)
    reg = random_regression()
    ae = fresh("autoencoder", reg, width=0.25).eval()
    got = evaluate(ae, reg.x_test, reg.y_test, loss="mse", batch_size=3)
    with torch.no_grad():
        want = float(F.mse_loss(ae(reg.x_test), reg.y_test))
    assert got["accuracy"] is None and got["loss"] == pytest.approx(want, rel=1e-5)


def test_evaluate_leaves_batchnorm_statistics_and_modes_alone():
    data = random_classification(size=8)
    model = fresh("resnet18", data, width=0.125)
    model.train()
    model.layer2.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    evaluate(model, data.x_test, data.y_test, loss="cross_entropy")
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # incl. running stats


def test_evaluate_checks_its_inputs():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="as many"):
        evaluate(model, torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), loss="cross_entropy")
    with pytest.raises(ValueError, match="int64 class labels"):
        evaluate(model, torch.zeros(3, 2), torch.zeros(3), loss="cross_entropy")


# ------------------------------------------------------------------------------------- augmentation
def test_local_augment_crops_and_flips_reproducibly():
    x = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).reshape(2, 3, 6, 7) + 1
    assert torch.equal(_local_augment(x, torch.Generator(), crop_padding=0, flip=False), x)
    a = _local_augment(x.repeat(20, 1, 1, 1), torch.Generator().manual_seed(0))
    b = _local_augment(x.repeat(20, 1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (40, 3, 6, 7)
    # every output is a (possibly flipped) shift of its input with zero fill
    for out, src in zip(a, x.repeat(20, 1, 1, 1)):
        p = 2
        padded = F.pad(src, (p, p, p, p))
        crops = [padded[:, i:i + 6, j:j + 7] for i in range(5) for j in range(5)]
        assert any(torch.equal(out, c) or torch.equal(out, c.flip(-1)) for c in crops)
    assert not torch.equal(a, x.repeat(20, 1, 1, 1))


# ------------------------------------------------------------------------------------- get_trained
def test_get_trained_caches_and_a_hit_does_not_train(tmp_path, monkeypatch):
    data = random_classification(size=8)
    cache = Cache(tmp_path)
    model, result = get_trained(cache, data, "small_cnn", 3, FAST, progress=False)
    assert not model.training and result.from_cache is False

    def no_training(*a, **k):
        raise AssertionError("train_model called on a cache hit")

    monkeypatch.setattr(train_mod, "train_model", no_training)
    again, cached = get_trained(cache, data, "small_cnn", 3, FAST, progress=False)
    assert states_equal(model, again) and not again.training
    assert cached.from_cache is True
    assert cached.test_accuracy == result.test_accuracy and cached.train_loss_history == result.train_loss_history
    with pytest.raises(AssertionError, match="cache hit"):  # another seed is another entry
        get_trained(cache, data, "small_cnn", 4, FAST, progress=False)
    with pytest.raises(AssertionError, match="cache hit"):  # so is another config
        get_trained(cache, data, "small_cnn", 3, TrainConfig(epochs=1, batch_size=17), progress=False)


def test_get_trained_is_reproducible_without_a_cache():
    data = random_classification(size=8)
    a, ra = get_trained(None, data, "lenet", 5, FAST, progress=False)
    b, rb = get_trained(None, data, "lenet", 5, FAST, progress=False)
    c, _ = get_trained(None, data, "lenet", 6, FAST, progress=False)
    assert states_equal(a, b) and ra.test_loss == rb.test_loss and not states_equal(a, c)


def test_get_trained_head_width(tmp_path):
    data = random_classification(num_classes=3, size=8)
    model, _ = get_trained(Cache(tmp_path), data, "small_cnn", 0, FAST, num_outputs=10, progress=False)
    assert model.fc2.out_features == 10
    with pytest.raises(ValueError, match="num_outputs=2 is less than the task's 3 classes"):
        get_trained(None, data, "small_cnn", 0, FAST, num_outputs=2, progress=False)


def test_get_trained_regression_and_model_options(tmp_path):
    data = random_regression(out_channels=2)
    model, result = get_trained(Cache(tmp_path), data, "autoencoder", 0, FAST, model_options={"width": 0.25},
                                progress=False)
    assert model.head.out_channels == 2 and model.head.in_channels == 8 and result.test_accuracy is None
    again, cached = get_trained(Cache(tmp_path), data, "autoencoder", 0, FAST, model_options={"width": 0.25},
                                progress=False)
    assert cached.from_cache and states_equal(model, again)
    with pytest.raises(ValueError, match="regression targets have 2 channels"):
        get_trained(None, data, "autoencoder", 0, FAST, num_outputs=3, progress=False)


def test_get_trained_recomputes_a_corrupt_entry(tmp_path):
    data = random_classification(size=8)
    cache = Cache(tmp_path)
    model, _ = get_trained(cache, data, "small_cnn", 0, FAST, progress=False)
    [path] = list((tmp_path / "model").glob("*.pt"))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.warns(RuntimeWarning, match="is damaged.*will be recomputed"):
        again, result = get_trained(cache, data, "small_cnn", 0, FAST, progress=False)
    assert result.from_cache is False and states_equal(model, again)
    assert get_trained(cache, data, "small_cnn", 0, FAST, progress=False)[1].from_cache


def test_get_trained_warns_again_on_a_cached_epsilon_miss(tmp_path):
    data = random_classification(size=8)
    cfg = TrainConfig(epochs=1, epsilon=0.0)
    with pytest.warns(RuntimeWarning, match="epsilon"):
        get_trained(Cache(tmp_path), data, "small_cnn", 0, cfg, progress=False)
    with pytest.warns(RuntimeWarning, match="epsilon"):
        _, result = get_trained(Cache(tmp_path), data, "small_cnn", 0, cfg, progress=False)
    assert result.from_cache and result.epsilon_ok is False


def test_train_result_round_trips_through_a_dict():
    r = TrainResult(test_accuracy=0.5, test_loss=1.25, train_loss_history=[2.0, 1.5], seconds=0.1, epsilon_ok=True)
    assert TrainResult.from_dict(r.to_dict()) == r
    assert math.isclose(TrainResult.from_dict({**r.to_dict(), "future_field": 1}).test_loss, 1.25)


def test_progress_bar_and_zero_epochs(capsys):
    data = random_classification(size=8)
    model = fresh("small_cnn", data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_model(model, data, TrainConfig(epochs=0), progress=True)
    assert result.train_loss_history == [] and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    train_model(model, data, FAST, progress=True)
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_get_trained_keys_every_training_option_but_on_epsilon(tmp_path):
    """Each option that changes the network gets its own cache entry; on_epsilon (what a miss does) shares one."""
    data = random_classification(size=8)
    cache = Cache(str(tmp_path))
    base = dict(epochs=1, batch_size=16, epsilon=0.0)
    variants = [dict(), dict(until_epsilon=True), dict(until_epsilon=True, patience=2), dict(validation=0.25),
                dict(lr=2e-3), dict(batch_size=8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for v in variants:
            _, r = get_trained(cache, data, "small_cnn", 0, TrainConfig(**{**base, **v}), progress=False)
            assert not r.from_cache
        _, again = get_trained(cache, data, "small_cnn", 0, TrainConfig(**base), progress=False)
    assert again.from_cache
    with pytest.raises(RuntimeError, match="epsilon"):  # a cached miss still raises when asked to
        get_trained(cache, data, "small_cnn", 0, TrainConfig(**base, on_epsilon="raise"), progress=False)
    assert len(list((tmp_path / "model").glob("*.pt"))) == len(variants)
