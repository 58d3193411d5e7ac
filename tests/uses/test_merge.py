"""fisher_merge against hand computations: weights, zero Fishers, buffers, wrapped names, mismatches."""
import pytest
import torch
import torch.nn as nn

from ftdfast.uses import fisher_merge


def net(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).to(dtype)
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2)
        m[1].num_batches_tracked.fill_(10 * seed + 1)
    return m


def fisher_of(model, seed):
    g = torch.Generator().manual_seed(100 + seed)
    return {n: torch.rand(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}


def entrywise(thetas, fishers, w, floor):
    """The formula one entry at a time, in Python floats."""
    out = []
    for i in range(thetas[0].numel()):
        t = [float(th.reshape(-1)[i]) for th in thetas]
        f = [max(float(fk.reshape(-1)[i]), floor) for fk in fishers]
        out.append(sum(wk * fk * tk for wk, fk, tk in zip(w, f, t)) / sum(wk * fk for wk, fk in zip(w, f)))
    return torch.tensor(out, dtype=torch.float64).reshape(thetas[0].shape)


@pytest.mark.parametrize("k,weights", [(2, None), (2, [3.0, 1.0]), (3, [0.2, 0.0, 0.8])],
                         ids=["two-uniform", "two-weighted", "three-one-zero-weight"])
def test_parameters_are_fisher_weighted_and_buffers_averaged(k, weights):
    models = [net(s) for s in range(k)]
    fishers = [fisher_of(m, s) for s, m in enumerate(models)]
    merged = fisher_merge(models, fishers, weights=weights, eps=0.3, normalize=False)
    w = [1 / k] * k if weights is None else [x / sum(weights) for x in weights]
    values = [float(v) for f in fishers for t in f.values() for v in t.reshape(-1)]
    floor = 0.3 * sum(values) / len(values)
    assert sum(float(v) < floor for v in values) > 5  # the floor bites somewhere
    assert list(merged) == list(models[0].state_dict())
    for name, p in models[0].named_parameters():
        want = entrywise([m.state_dict()[name] for m in models], [f[name] for f in fishers], w, floor)
        assert merged[name].dtype == torch.float32
        torch.testing.assert_close(merged[name].double(), want, rtol=1e-6, atol=1e-7)
    for name in ("1.running_mean", "1.running_var"):
        want = sum(wk * m.state_dict()[name].double() for wk, m in zip(w, models))
        torch.testing.assert_close(merged[name].double(), want, rtol=1e-6, atol=1e-7)
    assert int(merged["1.num_batches_tracked"]) == 1  # model 0's


def test_all_zero_fishers_give_the_plain_weighted_average_and_one_sided_ones_pick_the_informed_model():
    a, b = net(0), net(1)
    fa = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in a.named_parameters()}
    fb = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in a.named_parameters()}
    fa["2.weight"][0] = 1.0  # only a's data informs row 0 of the head
    fb["2.weight"][1] = 1.0  # only b's data informs row 1
    merged = fisher_merge([a, b], [fa, fb], weights=[1, 3], eps=1e-8)
    sa, sb = a.state_dict(), b.state_dict()
    for name in ("0.weight", "0.bias", "2.bias"):
        torch.testing.assert_close(merged[name], 0.25 * sa[name] + 0.75 * sb[name], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(merged["2.weight"][0], sa["2.weight"][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(merged["2.weight"][1], sb["2.weight"][1], rtol=1e-6, atol=1e-7)


def test_the_floor_is_relative_so_scaling_every_fisher_changes_nothing():
    a, b = net(0), net(1)
    fa, fb = fisher_of(a, 0), fisher_of(b, 1)
    want = fisher_merge([a, b], [fa, fb], eps=0.5)
    got = fisher_merge([a, b], [{k: 1e-9 * v for k, v in fa.items()}, {k: 1e-9 * v for k, v in fb.items()}], eps=0.5)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)
    zero = {k: torch.zeros_like(v) for k, v in fa.items()}
    plain = fisher_merge([a, b], [zero, zero])
    for n, p in a.named_parameters():
        torch.testing.assert_close(plain[n], (p + b.state_dict()[n]).detach() / 2, rtol=1e-6, atol=1e-7)


def test_identical_models_merge_to_themselves_and_one_model_to_a_copy():
    a = net(0)
    merged = fisher_merge([a, net(0)], [fisher_of(a, 0), fisher_of(a, 1)])
    for name, v in a.state_dict().items():
        torch.testing.assert_close(merged[name], v, rtol=1e-6, atol=1e-7)
    alone = fisher_merge([a], [fisher_of(a, 0)])
    assert all(torch.equal(alone[n], v) for n, v in a.state_dict().items())


def test_state_dicts_wrapped_models_and_a_float64_model():
    a, b = net(0, torch.float64), net(1, torch.float64)
    fa, fb = fisher_of(a, 0), fisher_of(b, 1)
    want = fisher_merge([a, b], [fa, fb])
    wrapped_state = nn.DataParallel(b).state_dict()
    assert all(k.startswith("module.") for k in wrapped_state)
    got = fisher_merge([nn.DataParallel(a), wrapped_state], [{"module." + k: v for k, v in fa.items()}, fb])
    assert list(got) == list(want)
    for n in want:
        assert got[n].dtype == want[n].dtype
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=0)
    assert want["0.weight"].dtype == torch.float64


def test_frozen_parameters_without_a_fisher_are_averaged():
    a, b = net(0), net(1)
    for m in (a, b):
        m[0].bias.requires_grad_(False)
    fa = {k: v for k, v in fisher_of(a, 0).items() if k != "0.bias"}
    fb = {k: v for k, v in fisher_of(b, 1).items() if k != "0.bias"}
    merged = fisher_merge([a, b], [fa, fb])
    torch.testing.assert_close(merged["0.bias"], (a[0].bias + b[0].bias).detach() / 2, rtol=1e-6, atol=1e-7)


def other_shape():
    m = net(1)
    m[2] = nn.Linear(4, 3)
    return m


def renamed():
    m = net(1)
    m.add_module("extra", nn.Linear(1, 1))
    return m


@pytest.mark.parametrize("make,match", [
    (lambda a, b, fa, fb: fisher_merge([a, other_shape()], [fa, fb]),
     r"'2.weight' has shape \(2, 4\) in models\[0\] but \(3, 4\) in models\[1\]"),
    (lambda a, b, fa, fb: fisher_merge([a, renamed()], [fa, fb]), r"models\[1\] has an entry 'extra.weight'"),
    (lambda a, b, fa, fb: fisher_merge([renamed(), a], [fa, fb]), r"models\[1\] has no entry 'extra.weight'"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [fa, {**fb, "0.weight": torch.ones(4)}]),
     r"fishers\[1\]\['0.weight'\] has shape \(4,\)"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [fa, {**fb, "9.weight": torch.ones(4)}]),
     r"fishers\[1\] has an entry '9.weight' that models\[0\]'s floating-point state lacks"),
    (lambda a, b, fa, fb: fisher_merge([a.state_dict(), b.state_dict()],
                                       [fa, {k: v for k, v in fb.items() if k != "2.bias"}]),
     r"fishers\[0\] has an entry '2.bias' that the other lacks"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [fa, {k: v for k, v in fb.items() if k != "2.bias"}]),
     "fishers\\[0\\] has an entry '2.bias'"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [{k: v for k, v in fa.items() if k != "2.bias"},
                                                {k: v for k, v in fb.items() if k != "2.bias"}]),
     r"models\[0\]'s trainable parameter '2.bias' has no entry"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [fa]), "1 Fishers for 2 models"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [fa, fb], weights=[1.0, -1.0]), "weights must be"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [fa, fb], weights=[1.0]), "1 weights for 2 models"),
    (lambda a, b, fa, fb: fisher_merge([a, b], [fa, fb], eps=0.0), "eps must be"),
    (lambda a, b, fa, fb: fisher_merge([a, 3], [fa, fb]), r"models\[1\] must be an nn.Module or a state_dict"),
], ids=["shape", "extra-entry", "missing-entry", "fisher-shape", "fisher-unknown-name", "fisher-names-differ",
        "fisher-names-differ-modules", "trainable-without-fisher", "count", "negative-weight", "weight-count",
        "eps-zero", "not-a-model"])
def test_mismatches_name_the_first_offender(make, match):
    a, b = net(0), net(1)
    with pytest.raises((ValueError, TypeError), match=match):
        make(a, b, fisher_of(a, 0), fisher_of(b, 1))


def test_normalize_scales_each_fisher_to_unit_mean_so_one_models_scale_does_not_matter():
    a, b = net(0), net(1)
    fa, fb = fisher_of(a, 0), fisher_of(b, 1)
    mean = lambda f: sum(float(v.sum()) for v in f.values()) / sum(v.numel() for v in f.values())  # noqa: E731
    by_hand = [{k: v / mean(f) for k, v in f.items()} for f in (fa, fb)]
    want = fisher_merge([a, b], by_hand, eps=0.3, normalize=False)  # mean of the unit-mean Fishers is 1: floor 0.3
    got = fisher_merge([a, b], [fa, {k: 1e6 * v for k, v in fb.items()}], eps=0.3, normalize=True)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)
    lopsided = fisher_merge([a, b], [fa, {k: 1e6 * v for k, v in fb.items()}], eps=1e-8, normalize=False)  # b decides
    torch.testing.assert_close(lopsided["0.weight"], b.state_dict()["0.weight"], rtol=1e-4, atol=1e-5)
    zero = {k: torch.zeros_like(v) for k, v in fa.items()}  # an all-zero Fisher stays zero: model b decides
    only_b = fisher_merge([a, b], [zero, fb], eps=1e-8, normalize=True)
    torch.testing.assert_close(only_b["0.weight"], b.state_dict()["0.weight"], rtol=1e-6, atol=1e-7)
