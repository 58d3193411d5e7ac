"""``rank_sources``: which trained source model to start from for a new target task."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch.nn as nn

from ..cache import Cache
from ..distance.matrix import DEFAULT_CONFIG
from ..progress import progress_bar
from ..tasks import Task
from ..train import TrainConfig, get_trained
from . import estimators
from .context import Context, Source, as_target, check_input_fits
from .estimators import Estimator
from .probe import find_head

#: The estimator of ``rank_sources`` (and ``ftdfast transfer rank``) unless ``method=`` says otherwise: LEEP, the
#: best-agreeing estimator on the transfer ground truth (``docs/transfer/README.md``: 9 sources, 6 few-shot targets;
#: Kendall tau with the measured fine-tuning gain +0.58 and +0.56 in its two settings, the best source first for 6
#: of 6 targets; LogME +0.55 and +0.48, the difference not significant). The Fisher task distance ``ftd`` ranked
#: the sources against their gain there (tau -0.39 to -0.04 over its variants), so it is not the default.
DEFAULT_METHOD = "leep"
#: Seeds of the target's networks unless ``seeds=`` says otherwise (as the distance step's matrix).
DEFAULT_SEEDS = 3
#: The architecture of the networks trained for sources given as tasks.
DEFAULT_ARCH = "small_cnn"


@dataclass
class Ranking:
    """The sources ranked by one estimator.

    Attributes:
        method: the estimator's label: its name, with the options that differ from their defaults in brackets
            (``"ftd"``, ``"ftd[head=probe]"``); options: all its options.
        scores: source name -> score (the mean over the target's network seeds for seeded estimators).
        std: source name -> the sample standard deviation over those seeds (ddof 1), None where there is one value.
        lower_is_better: True for distances (ftd, fisher_cosine, task2vec), False for the others.
        seconds: wall time of this estimator's scoring in this call (shared work, e.g. the target's networks,
            is charged to the first estimator that asks for it).
    """

    method: str
    scores: Dict[str, float]
    std: Dict[str, Optional[float]]
    lower_is_better: bool
    seconds: float
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> List[str]:
        """Source names, best first (ties: by name)."""
        sign = 1.0 if self.lower_is_better else -1.0
        return sorted(self.scores, key=lambda n: (sign * self.scores[n], n))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: method, options, lower_is_better, order, scores, std, seconds."""
        return {"method": self.method, "options": {k: repr(v) if not isinstance(v, (int, float, str, bool, type(None)))
                                                   else v for k, v in self.options.items()},
                "lower_is_better": self.lower_is_better, "order": self.order, "scores": dict(self.scores),
                "std": dict(self.std), "seconds": self.seconds}

    def __repr__(self) -> str:
        best = "lower" if self.lower_is_better else "higher"
        rows = ", ".join(f"{n}={self.scores[n]:.4g}" for n in self.order)
        return f"Ranking({self.method!r}, {best} is better: {rows})"


def _estimator(method: Union[str, Estimator]) -> Estimator:
    if isinstance(method, Estimator):
        return method
    if isinstance(method, str):
        return estimators.get(method)
    raise TypeError(f"method must be an estimator name ({', '.join(estimators.names())}) or an Estimator, "
                    f"got {type(method).__name__}")


def _seeds(seeds: Union[int, Sequence[int]]) -> List[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list of seeds, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a non-empty list of distinct ints, got {seeds!r}")
    return out


def rank_sources(sources: Mapping, target: Any, method: Union[str, Estimator] = DEFAULT_METHOD, *,
                 methods: Optional[Sequence[Union[str, Estimator]]] = None, target_model: Optional[nn.Module] = None,
                 seeds: Union[int, Sequence[int]] = DEFAULT_SEEDS, head_module: Optional[str] = None,
                 arch: str = DEFAULT_ARCH, config: Optional[TrainConfig] = None, cache_dir: Optional[str] = None,
                 device=None, progress: bool = True) -> Union[Ranking, Dict[str, Ranking]]:
    """Rank candidate source models for a target task, best first.

    Args:
        sources: name -> a trained classifier (``nn.Module`` returning logits (n, outputs), any architecture
            whose input takes the target's, heads of any width; put in eval mode here), or name -> ``TaskData``
            (networks of ``arch`` are trained for it with ``config``, one per seed as needed, all with the shared
            head width max(classes of every task source and the target), via ``get_trained``: cached in
            ``cache_dir`` like the distance step's networks; the estimators that read one source network use
            the first seed's).
        target: a classification ``TaskData`` or a tuple ``(x_train (n, ...), y_train (n,), x_test, y_test)``.
        method: an estimator name (``ftdfast.transfer.estimators.names()``; default :data:`DEFAULT_METHOD`,
            ``"leep"``; ``"ftd"`` is the Fisher task distance) or an :class:`Estimator` built with options
            (``estimators.get("ftd", head="probe")``).
        methods: several estimators at once; the result is then a dict method label -> :class:`Ranking`
            (the name, with non-default options in brackets: ``"ftd[head=probe]"``).
        target_model: the target's own trained network (same body as the sources for ``ftd``). Without it, the
            estimators that need one (ftd, fisher_cosine) train it once per seed: for task sources with
            ``arch``; for module sources as a re-initialized copy of the source (``reset_parameters`` after
            ``seed_everything(seed)``) with a new head as wide as the widest source head of the same body (at
            least the target's class count), one network per seed shared by the sources of that body.
        seeds: the target's networks' seeds (a count S: 0..S-1, or a list); scores are means over them and
            ``Ranking.std`` their spread.
        head_module: the dotted name of every source network's head (an ``nn.Linear``); default: the last
            ``nn.Linear`` of each. Features are its input.
        config: how networks are trained; default ``ftdfast.distance.matrix.DEFAULT_CONFIG``, the distance
            step's epsilon-networks (Adam lr 1e-3, batch 128, until test accuracy >= 0.98, at most 20
            epochs, stop after 3 epochs without improvement; a miss warns).
        cache_dir: where networks trained for task sources and targets are kept (None: nowhere).
        device: where the target's networks are trained (default: the source's device; CPU for task sources).
        progress: show progress bars.

    Returns:
        A :class:`Ranking` (``.scores``, ``.std``, ``.order`` best first, ``.lower_is_better``), or with
        ``methods`` a dict method name -> Ranking.

    Raises:
        ValueError: no sources, an unknown method (the known ones listed), a target with fewer than two classes,
            a source that cannot take the target's inputs, an estimator that needs what a source lacks.
    """
    wanted = [_estimator(m) for m in (methods if methods is not None else [method])]
    if not wanted:
        raise ValueError("methods is empty: name at least one estimator, e.g. methods=['ftd', 'leep']")
    labels = [e.label for e in wanted]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"methods names {dup} more than once; give each estimator (with its options) once")
    if not isinstance(sources, Mapping) or not sources:
        raise ValueError("sources is empty (or not a mapping): give a dict name -> trained nn.Module or "
                         "name -> TaskData with at least one entry")
    target = as_target(target)
    config = config or DEFAULT_CONFIG
    seed_list = _seeds(seeds)
    cache = Cache(cache_dir) if cache_dir is not None else None
    for name, item in sources.items():  # every source checked before any network is trained
        _check_source(str(name), item, target)
    task_widths = [int(d.num_classes) for d in sources.values() if not isinstance(d, nn.Module)]
    shared = max(task_widths + [int(target.num_classes)])
    built: List[Source] = []
    for name, item in sources.items():
        built.append(_source(str(name), item, head_module, arch, config, cache, shared, seed_list[0], device,
                             progress))
    for s in built:
        check_input_fits(s, target.x_train)
    target_head = None
    if target_model is not None:
        if not isinstance(target_model, nn.Module):
            raise TypeError(f"target_model must be an nn.Module, got {type(target_model).__name__}")
        target_head = find_head(target_model, head_module, what="target_model")
        target_model.eval()
    context = Context(built, target, seeds=seed_list, target_model=target_model, target_head=target_head,
                      config=config, arch=arch, cache=cache, num_outputs=shared, device=device, progress=progress)
    out: Dict[str, Ranking] = {}
    with progress_bar(total=len(wanted) * len(built), enabled=progress, desc="rank sources", unit="score") as bar:
        for est in wanted:
            if "source_data" in est.needs:
                lacking = [s.name for s in built if s.data is None]
                if lacking:
                    raise ValueError(f"estimator {est.name!r} needs the sources' data, but {lacking} are trained "
                                     "networks only: pass those sources as name -> TaskData")
            t0 = time.perf_counter()
            scores: Dict[str, float] = {}
            std: Dict[str, Optional[float]] = {}
            for s in built:
                values = est.per_seed(s, target, context) if est.seeded else [est.score(s, target, context)]
                scores[s.name] = float(np.mean(values))
                std[s.name] = float(np.std(values, ddof=1)) if len(values) > 1 else None
                if not math.isfinite(scores[s.name]):
                    raise ValueError(f"estimator {est.name!r} gave {scores[s.name]} for source {s.name!r}")
                bar.update(1)
            out[est.label] = Ranking(est.label, scores, std, est.lower_is_better, time.perf_counter() - t0,
                                    dict(est.options))
    return out if methods is not None else out[wanted[0].label]


def _check_source(name: str, item: Any, target: Any) -> None:
    if isinstance(item, nn.Module):
        return
    if isinstance(item, Task):
        raise TypeError(f"source {name!r} is a Task, not its data: build it first (task.build(data, seed)) and "
                        "pass the TaskData")
    if not all(hasattr(item, a) for a in ("x_train", "y_train", "fingerprint", "num_classes", "loss")):
        raise TypeError(f"source {name!r} is a {type(item).__name__}: give a trained nn.Module or a TaskData")
    if item.loss != "cross_entropy":
        raise ValueError(f"source {name!r} is a regression task: sources must be classification tasks")
    if tuple(item.x_train.shape[1:]) != tuple(target.x_train.shape[1:]):
        raise ValueError(f"source task {name!r} has inputs {tuple(item.x_train.shape[1:])} but the target "
                         f"{tuple(target.x_train.shape[1:])}: bring both to one input format (e.g. 32x32, 3 "
                         "channels) so one architecture takes both")


def _source(name: str, item: Any, head_module: Optional[str], arch: str, config: TrainConfig, cache, shared: int,
            first_seed: int, device, progress: bool) -> Source:
    """A checked source (:func:`_check_source`) as a :class:`Source`; task sources get their trainer."""
    if isinstance(item, nn.Module):
        return Source(name, item.eval(), find_head(item, head_module, what=f"source {name!r}"))

    def trainer(seed: int) -> nn.Module:
        return get_trained(cache, item, arch, seed, config, num_outputs=shared, device=device, progress=progress)[0]

    source = Source(name, trainer(first_seed), "", data=item, arch=arch, trainer=trainer)
    source.head = find_head(source.model, head_module, what=f"source {name!r}")
    source._nets[first_seed] = source.model
    return source
