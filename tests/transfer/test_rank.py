"""rank_sources on problems whose right order is known (tests/transfer/problems.py), and the Ranking."""
import json
import warnings

import numpy as np
import pytest
import torch.nn as nn

from ftdfast.transfer import Ranking, get, names, rank_sources
from ftdfast.transfer import context as context_module

from .problems import FAST, IMAGE_CONFIG, image_sources, mlp, vector_sources

try:
    import ot  # noqa: F401
    DATA_METHODS = names()
except ImportError:  # the otdd estimator needs POT (pip install pot)
    DATA_METHODS = tuple(n for n in names() if n != "otdd")
MODEL_METHODS = [n for n in DATA_METHODS if n not in ("task2vec", "otdd")]
VARIANTS = [get("ftd", params="body"), get("ftd", head="probe"), get("ftd", fisher="empirical"),
            get("ftd", fisher="mc", on="train"), get("fisher_cosine", params="body")]


@pytest.fixture(scope="module")
def vector_rankings():
    nets, target = vector_sources()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rank_sources(nets, target, methods=MODEL_METHODS + VARIANTS, seeds=[0],
                            config=FAST, progress=False)


@pytest.fixture(scope="module")
def image_rankings(tmp_path_factory):
    sources, target = image_sources()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rank_sources(sources, target, methods=list(DATA_METHODS), seeds=2, config=IMAGE_CONFIG,
                            cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False)


@pytest.mark.parametrize("label", MODEL_METHODS + [v.label for v in VARIANTS])
def test_trained_networks_related_source_first(vector_rankings, label):
    r = vector_rankings[label]
    assert r.order == ["related", "noise"], r


@pytest.mark.parametrize("label", DATA_METHODS)
def test_task_sources_related_source_first(image_rankings, label):
    r = image_rankings[label]
    assert r.order == ["related", "noise"], r


def test_seeded_estimators_report_a_spread_over_seeds(image_rankings):
    for label, r in image_rankings.items():
        for name in ("related", "noise"):
            if get(label).seeded:
                assert r.std[name] is not None and r.std[name] >= 0
            else:
                assert r.std[name] is None


def test_ranking_is_json_ready_and_ordered_by_direction():
    r = Ranking("ftd", {"b": 0.3, "a": 0.1, "c": 0.3}, {"a": None, "b": 0.01, "c": None}, True, 1.5)
    assert r.order == ["a", "b", "c"]  # ties by name
    assert Ranking("leep", {"b": 0.3, "a": 0.1}, {"a": None, "b": None}, False, 0.1).order == ["b", "a"]
    d = json.loads(json.dumps(r.to_dict()))
    assert d["order"] == ["a", "b", "c"] and d["lower_is_better"] is True and d["std"]["b"] == 0.01


def test_one_method_gives_one_ranking():
    nets, target = vector_sources()
    r = rank_sources(nets, target, "leep", progress=False)
    assert isinstance(r, Ranking) and r.method == "leep" and set(r.scores) == {"related", "noise"}


def test_target_networks_are_trained_once_per_seed_and_shared(monkeypatch):
    nets, target = vector_sources()
    nets["related_copy"] = nets["related"]
    calls = []
    real = context_module.train_model

    def counting(model, data, config, **kw):
        calls.append(kw["seed"])
        return real(model, data, config, **kw)

    monkeypatch.setattr(context_module, "train_model", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = rank_sources(nets, target, methods=["ftd", "fisher_cosine"], seeds=[0, 1], config=FAST,
                           progress=False)
    assert sorted(calls) == [0, 1]
    assert out["ftd"].scores["related"] == out["ftd"].scores["related_copy"]


def test_a_given_target_model_is_used_as_is(monkeypatch):
    nets, target = vector_sources()
    monkeypatch.setattr(context_module, "train_model", lambda *a, **k: pytest.fail("trained a target network"))
    tm = mlp()
    r = rank_sources(nets, target, "ftd", target_model=tm, seeds=5, progress=False)
    assert all(v is None for v in r.std.values()) and all(np.isfinite(list(r.scores.values())))


def test_head_module_names_the_head_whose_input_is_the_feature():
    nets, target = vector_sources()
    # naming the first layer as the head: the features are then the raw inputs, the same for both sources
    r = rank_sources(nets, target, "hscore", head_module="0", progress=False)
    assert r.scores["related"] == pytest.approx(r.scores["noise"])
    assert isinstance(nets["related"][0], nn.Linear)


def test_the_default_estimator_is_the_best_measured_one():
    """DEFAULT_METHOD is chosen by the ground truth of docs/transfer (LEEP); rank_sources and the CLI share it."""
    from ftdfast.cli import build_parser
    from ftdfast.transfer import DEFAULT_METHOD
    nets, target = vector_sources()
    r = rank_sources(nets, target, progress=False)
    assert DEFAULT_METHOD == "leep" and r.method == "leep" and not r.lower_is_better
    assert r.order[0] == "related"
    args = build_parser().parse_args(["transfer", "rank", "--target", "x.npz"])
    assert args.method == DEFAULT_METHOD
