"""ftd and fisher_cosine against Fishers taken by hand (tests/transfer/handnet.py) on a two-layer network."""
import numpy as np
import pytest
import torch

from ftdfast.transfer import Context, Source, TargetData, get
from ftdfast.transfer.estimators.ftd import DEFAULT_FISHER

from ..handnet import hellinger, make_net, one_minus_cosine, params_of, per_sample_squares, softmax_rows

ALL = ("0.weight", "0.bias", "2.weight", "2.bias")
BODY = ("0.weight", "0.bias")


def setup(seed=0, n=7, I=3, H=4, C=3):
    rng = np.random.default_rng(seed)
    src = make_net(rng.normal(size=(H, I)), rng.normal(size=H), rng.normal(size=(C, H)), rng.normal(size=C))
    tgt = make_net(rng.normal(size=(H, I)), rng.normal(size=H), rng.normal(size=(C, H)), rng.normal(size=C))
    x_tr, x_te = rng.normal(size=(n, I)), rng.normal(size=(n + 2, I))
    y_tr, y_te = np.arange(n) % C, rng.integers(0, C, size=n + 2)
    target = TargetData(*(torch.as_tensor(v, dtype=torch.float32 if v.dtype.kind == "f" else torch.int64)
                          for v in (x_tr, y_tr, x_te, y_te)), num_classes=C)
    context = Context([Source("a", src, "2")], target, target_model=tgt, target_head="2")
    return src, tgt, target, context


def hand_fishers(src, tgt, target, kind, split):
    x = getattr(target, f"x_{split}").double().numpy()
    y = getattr(target, f"y_{split}").numpy()
    out = []
    for net in (src, tgt):
        P = params_of(net)
        w = np.eye(P[2].shape[0])[y] if kind == "empirical" else softmax_rows(*P, x)
        out.append(per_sample_squares(*P, x, w))
    return out


# (id, estimator options, Fisher kind, split, parameters compared, the measure)
CASES = [
    ("default", {}, "exact", "test", ALL, hellinger),
    ("paper", {"fisher": "empirical"}, "empirical", "test", ALL, hellinger),
    ("body", {"params": "body", "fisher": "empirical"}, "empirical", "test", BODY, hellinger),
    ("exact-on-train", {"fisher": "exact", "on": "train"}, "exact", "train", ALL, hellinger),
    ("cosine", {"measure": "fisher_cosine", "fisher": "empirical"}, "empirical", "test", ALL, one_minus_cosine),
    ("cosine-exact-body", {"measure": "fisher_cosine", "fisher": "exact", "params": "body"}, "exact", "test", BODY,
     one_minus_cosine),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_against_hand_fishers(case):
    _, options, kind, split, names, measure = case
    options = dict(options)
    est = get(options.pop("measure", "ftd"), **options)
    src, tgt, target, context = setup()
    Fa, Fb = hand_fishers(src, tgt, target, kind, split)
    source = context.sources[0]
    assert est.per_seed(source, target, context) == pytest.approx([measure(Fa, Fb, names)], rel=1e-5)
    assert est.lower_is_better and est.seeded


def test_default_is_the_paper_but_for_the_label_free_fisher():
    est = get("ftd")
    assert DEFAULT_FISHER == "exact"  # the one default of every task distance (ftdfast.distance.task)
    assert (est.head, est.params, est.fisher, est.on) == ("source", "all", "exact", "test")


def test_probe_head_replaces_the_source_head_by_the_fitted_one():
    from ftdfast.transfer.probe import fit_linear_head
    src, tgt, target, context = setup(seed=3)
    P = params_of(src)
    feats = np.maximum(target.x_train.double().numpy() @ P[0].T + P[1], 0)
    head = fit_linear_head(feats, target.y_train.numpy(), 3)
    probe = [P[0], P[1], head.weight.detach().double().numpy(), head.bias.detach().double().numpy()]
    x, y = target.x_test.double().numpy(), target.y_test.numpy()
    Fa = per_sample_squares(*probe, x, np.eye(3)[y])
    Fb = per_sample_squares(*params_of(tgt), x, np.eye(3)[y])
    got = get("ftd", head="probe", fisher="empirical").per_seed(context.sources[0], target, context)
    assert got == pytest.approx([hellinger(Fa, Fb, ALL)], rel=1e-4)
