"""Synthetic transfer problems whose right order is known by construction.

The target's label is a fixed function of the input (``RULES["quadrant"]`` for images, ``RULES["first"]``
for vectors). The "related" source was trained on that same function of other samples; the "noise"
source on labels drawn at random, which no feature can predict (for the image tasks also on inputs of
twice the spread, so that a dataset distance sees another dataset, not only other labels). Every
estimator should put "related" first. Networks share their initialization (seed 0), as the distance step's
networks of one seed do.
"""
import functools
import warnings

import torch
import torch.nn as nn

from ftdfast import TrainConfig, train_model
from ftdfast.tasks import Task, TaskData
from ftdfast.transfer import TargetData

RULES = {
    "first": lambda x: (x[:, 0] > 0).long(),                             # vectors (n, 8)
    "quadrant": lambda x: (x[:, 0, :4, :4].mean((1, 2)) > 0).long(),     # images (n, 1, 8, 8)
}
#: Training of the test networks: fast, and enough to fit these rules.
FAST = TrainConfig(epochs=40, batch_size=16, lr=1e-2)
IMAGE_CONFIG = TrainConfig(epochs=12, batch_size=32, lr=3e-3)


def draw(shape, n, seed, rule, scale=1.0):
    """(x, y): n normal inputs of ``shape`` (std ``scale``); labels by ``rule`` or, for "noise", uniform at random."""
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 2, (n,), generator=g) if rule == "noise" else RULES[rule](x)
    return x, y


def mlp(width: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, width))


def vector_sources():
    """name -> a trained MLP (8 -> 16 -> 2) (a new dict each call, the networks trained once), and the target:
    a tuple of 40 training and 200 test samples."""
    nets, target = _vector_sources()
    return dict(nets), target


@functools.lru_cache(maxsize=None)
def _vector_sources():
    nets = {}
    for name, rule, seed in (("related", "first", 1), ("noise", "noise", 2)):
        x, y = draw((8,), 400, seed, rule)
        net = mlp()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_model(net, TargetData(x, y, x, y, 2), FAST, progress=False)
        nets[name] = net
    target = (*draw((8,), 40, 10, "first"), *draw((8,), 200, 11, "first"))
    return nets, target


def image_task(name: str, rule: str, n_train: int, seed: int, scale: float = 1.0) -> TaskData:
    x_tr, y_tr = draw((1, 8, 8), n_train, seed, rule, scale)
    x_te, y_te = draw((1, 8, 8), 200, seed + 100, rule, scale)
    return TaskData(Task(name), x_tr, y_tr, x_te, y_te, num_classes=2, loss="cross_entropy", source="synthetic")


def image_sources():
    """name -> TaskData of the related and the noise source tasks (300 images each), and the target (60)."""
    return ({"related": image_task("related", "quadrant", 300, 1),
             "noise": image_task("noise", "noise", 300, 2, scale=2.0)},
            image_task("target", "quadrant", 60, 3))
