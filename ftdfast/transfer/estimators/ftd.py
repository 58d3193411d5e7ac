"""FTD, the Fisher task distance from source a to target b (Le, Soltani, Dong, Tarokh, the paper ftdfast implements):

    d(a, b) = (1/sqrt 2) || sqrt(F_ab / tr F_ab) - sqrt(F_bb / tr F_bb) ||_2

F_ab: the diagonal Fisher of the source's network N_a on the target's data; F_bb: that of the target's own
network N_b (one per target-network seed s; the score is the mean over seeds). Lower is better.
Sources given as tasks have one network per seed too, N_a^s, started from the same initialization as
N_b^s, as in the distance step (the Fisher compares parameters one by one, so shared initialization is
what makes hidden units correspond); a trained network given as a source is the same for every seed.

Options (defaults = the paper's definition):

- ``head``: ``"source"`` (N_a as it is) or ``"probe"`` (N_a's head replaced by a linear head fitted on the
  target's training split on N_a's penultimate features; see ``Context.probe_network``).
- ``params``: ``"all"`` (every trainable parameter; needs equal shapes in both networks) or ``"body"``
  (the head's parameters left out of both Fishers: works for heads of any width).
- ``fisher``: ``"empirical"`` (the target's labels), ``"exact"`` (label-free: the expectation over each
  network's own predictive distribution) or ``"mc"`` (``mc_samples`` labels drawn from each network).
- ``on``: the target split the Fishers are taken on, ``"test"`` (the paper) or ``"train"``.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ...distance.measures import fisher_task_distance
from ...distance.task import DEFAULT_FISHER
from ...fisher.losses import FISHER_KINDS
from ..context import Source, in_module
from .base import Estimator, check_choice, register

HEADS = ("source", "probe")
PARAMS = ("all", "body")
ON = ("test", "train")


def select(F, head: str, params: str) -> Dict[str, torch.Tensor]:
    """The Fisher's entries as a dict name -> tensor: all of them, or (``params="body"``) those outside ``head``."""
    return {n: t for n, t in F.items() if params == "all" or not in_module(n, head)}


def check_shapes(F_ab: Dict[str, torch.Tensor], F_bb: Dict[str, torch.Tensor], source: str, params: str) -> None:
    """Same names and shapes in both, else a ValueError naming the first difference and the fix."""
    fix = ("params='body' leaves the heads out and works for heads of any width" if params == "all" else
           "the source and the target's network must share their body: give a target_model of the source's "
           "architecture")
    for name in list(F_ab) + [n for n in F_bb if n not in F_ab]:
        a, b = F_ab.get(name), F_bb.get(name)
        if a is None or b is None or a.shape != b.shape:
            shape = lambda t: "absent" if t is None else list(t.shape)  # noqa: E731
            raise ValueError(f"source {source!r}: parameter {name!r} is {shape(a)} in the source's network and "
                             f"{shape(b)} in the target's (params={params!r}); {fix}")


@register
class FTD(Estimator):
    """The Fisher task distance d(source, target), mean over the target's network seeds. Lower is better."""

    name = "ftd"
    lower_is_better = True
    needs = frozenset({"fisher"})
    seeded = True
    #: the comparison of the two Fishers (dicts name -> tensor of equal shapes) -> float
    measure: Callable[..., float] = staticmethod(fisher_task_distance)

    def __init__(self, *, head: str = "source", params: str = "all", fisher: str = DEFAULT_FISHER,
                 on: str = "test", mc_samples: int = 1):
        self.head = check_choice(self.name, "head", head, HEADS)
        self.params = check_choice(self.name, "params", params, PARAMS)
        self.fisher = check_choice(self.name, "fisher", fisher, FISHER_KINDS)
        self.on = check_choice(self.name, "on", on, ON)
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"{self.name}: mc_samples must be an int >= 1, got {mc_samples!r}")
        self.mc_samples = mc_samples
        self.options = {"head": head, "params": params, "fisher": fisher, "on": on, "mc_samples": mc_samples}

    def source_network(self, source: Source, seed, context):
        if self.head == "probe":
            return context.probe_network(source, seed)
        C = int(context.target.num_classes)
        if self.fisher == "empirical" and source.width < C:
            raise ValueError(f"source {source.name!r} has {source.width} outputs but the target has {C} classes: "
                             "the empirical Fisher feeds the target's labels into the source's outputs. Use "
                             "fisher='exact' (label-free), or head='probe' (a head fitted on the target)")
        return source.network(seed)

    def per_seed(self, source: Source, target, context) -> List[float]:
        values = []
        for seed, net_b, head_b in context.target_networks(source):
            net_a = self.source_network(source, seed, context)
            F_ab = select(context.fisher(("source", source.name, id(net_a)), net_a, self.on, self.fisher,
                                         self.mc_samples), source.head, self.params)
            F_bb = select(context.fisher(("target", id(net_b)), net_b, self.on, self.fisher, self.mc_samples),
                          head_b, self.params)
            check_shapes(F_ab, F_bb, source.name, self.params)
            values.append(float(self.measure(F_ab, F_bb)))
        return values
