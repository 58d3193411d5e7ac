"""task2vec: the normalized cosine by hand, and the embedding against a hand-taken exact Fisher."""
import math

import numpy as np
import pytest
import torch

from ftdfast.transfer.estimators.task2vec import embedding, normalized_cosine
from ftdfast.transfer.probe import fit_linear_head

from ..handnet import make_net, params_of, per_sample_squares, softmax_rows


def test_normalized_cosine_by_hand():
    # e_a = (1, 3, 0), e_b = (1, 1, 0): the third entry is dropped (0 + 0); u = (1/2, 3/4), v = (1/2, 1/4)
    u, v = np.array([0.5, 0.75]), np.array([0.5, 0.25])
    want = 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    assert normalized_cosine(np.array([1.0, 3.0, 0.0]), np.array([1.0, 1.0, 0.0])) == pytest.approx(want)
    # equal embeddings: u = v = 1/2 everywhere, distance 0; disjoint supports: u = (1, 0), v = (0, 1), distance 1
    assert normalized_cosine(np.array([2.0, 5.0]), np.array([2.0, 5.0])) == pytest.approx(0.0, abs=1e-15)
    assert normalized_cosine(np.array([2.0, 0.0]), np.array([0.0, 5.0])) == pytest.approx(1.0)
    assert math.isclose(normalized_cosine(np.array([1.0, 2.0]), np.array([3.0, 4.0])),
                        normalized_cosine(np.array([3.0, 4.0]), np.array([1.0, 2.0])))


def test_embedding_is_the_filter_averaged_exact_fisher_of_the_body():
    rng = np.random.default_rng(4)
    probe = make_net(rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=(2, 5)), rng.normal(size=2))
    x = torch.as_tensor(rng.normal(size=(12, 3)), dtype=torch.float32)
    y = torch.as_tensor(np.arange(12) % 3)
    P = params_of(probe)
    xd = x.double().numpy()
    head = fit_linear_head(np.maximum(xd @ P[0].T + P[1], 0), y.numpy(), 3)
    fitted = [P[0], P[1], head.weight.detach().double().numpy(), head.bias.detach().double().numpy()]
    F = per_sample_squares(*fitted, xd, softmax_rows(*fitted, xd))
    want = F["0.weight"].mean(1)  # one entry per hidden unit (filter) of the body's only weight tensor
    assert embedding(probe, "2", x, y) == pytest.approx(want, rel=1e-4)
