"""Bad input to rank_sources and the estimators: each error names the problem and the fix."""
import warnings

import pytest
import torch
import torch.nn as nn

from ftdfast.tasks import Task
from ftdfast.transfer import get, rank_sources

from .problems import FAST, draw, image_sources, vector_sources


def test_empty_sources():
    _, target = vector_sources()
    with pytest.raises(ValueError, match="sources is empty"):
        rank_sources({}, target)


def test_unknown_method_lists_the_known_ones():
    nets, target = vector_sources()
    with pytest.raises(ValueError, match="unknown transferability estimator 'kl'; known: ftd, fisher_cosine"):
        rank_sources(nets, target, "kl")


def test_a_target_with_one_class():
    nets, _ = vector_sources()
    x, _ = draw((8,), 20, 0, "first")
    with pytest.raises(ValueError, match="hold 1 class.*at least two"):
        rank_sources(nets, (x, torch.zeros(20, dtype=torch.int64), x, torch.zeros(20, dtype=torch.int64)))


def test_a_source_that_cannot_take_the_target_inputs():
    nets, _ = vector_sources()
    x, y = draw((5,), 20, 0, "first")
    with pytest.raises(ValueError, match=r"source 'related' cannot take the target's inputs of shape \(5,\).*"
                                         "input format"):
        rank_sources(nets, (x, y, x, y), "leep")


def test_a_source_that_is_not_a_classifier():
    nets, target = vector_sources()
    nets["conv"] = nn.Sequential(nn.Linear(8, 4), nn.Unflatten(1, (2, 2)))
    with pytest.raises(ValueError, match="must be a classifier returning logits"):
        rank_sources(nets, target, "leep")


def test_heads_of_different_widths_need_params_body():
    nets, target = vector_sources()
    torch.manual_seed(0)
    nets["wide"] = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="params='body' leaves the heads out"):
            rank_sources(nets, target, get("ftd", fisher="exact"), seeds=[0], config=FAST, progress=False)
        r = rank_sources(nets, target, get("ftd", params="body"), seeds=[0], config=FAST, progress=False)
    assert set(r.scores) == {"related", "noise", "wide"}


def test_empirical_fisher_with_a_source_head_narrower_than_the_target():
    nets, _ = vector_sources()
    x, y = draw((8,), 30, 0, "first")
    y = torch.arange(30) % 3
    with pytest.raises(ValueError, match="has 2 outputs but the target has 3 classes.*fisher='exact'"):
        rank_sources(nets, (x, y, x, y), get("ftd", fisher="empirical"), target_model=nets["related"],
                     progress=False)


def test_task2vec_needs_the_sources_data():
    nets, target = vector_sources()
    with pytest.raises(ValueError, match="needs the sources' data.*name -> TaskData"):
        rank_sources(nets, target, "task2vec", progress=False)


def test_a_task_that_is_not_built():
    _, target = image_sources()
    with pytest.raises(TypeError, match=r"build it first \(task.build\(data, seed\)\)"):
        rank_sources({"a": Task("mnist:0", classes=(0, 1))}, target)
    with pytest.raises(TypeError, match="build it first"):
        rank_sources({"full": Task("mnist:3")}, target)  # a full task has no class count before it is built


def test_a_source_task_with_other_inputs():
    sources, target = image_sources()
    x, y = draw((1, 6, 6), 20, 0, "noise")
    from ftdfast.tasks import TaskData
    sources["small"] = TaskData(Task("small"), x, y, x, y, num_classes=2, loss="cross_entropy")
    with pytest.raises(ValueError, match="one input format"):
        rank_sources(sources, target, "leep")


def test_seeds_and_target_model_are_checked():
    nets, target = vector_sources()
    with pytest.raises(ValueError, match="seeds must be a count >= 1"):
        rank_sources(nets, target, seeds=0)
    with pytest.raises(TypeError, match="target_model must be an nn.Module"):
        rank_sources(nets, target, target_model="net.pt")
    with pytest.raises(TypeError, match=r"must be \(x_train, y_train, x_test, y_test\), got 2 items"):
        rank_sources(nets, target[:2])
