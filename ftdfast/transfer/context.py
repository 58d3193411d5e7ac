"""What estimators share: the sources, the target data, and a :class:`Context` that computes each shared
quantity once (source outputs and features on the target data, the target's networks, Fishers, probes).

Index letters: n target samples of a split, Z source outputs, D features (the input of a head).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..distance.matrix import DEFAULT_CONFIG
from ..fisher import FisherDiagonal, fisher_diagonal
from ..tasks import Task
from ..train import TrainConfig, get_trained, train_model
from .probe import find_head, fit_linear_head, reinitialized, with_head

SPLITS = ("train", "test")
BATCH = 256


@dataclass(frozen=True, eq=False)
class TargetData:
    """A target given as tensors: the fields of a classification ``TaskData`` that training and the
    Fisher read (``x_train (n, ...)``, ``y_train (n,)`` int64, ``x_test``, ``y_test``, ``num_classes``,
    ``loss``, ``task``, ``fingerprint()``), without TaskData's image-only shape check."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    loss: str = "cross_entropy"
    task: Task = field(default_factory=lambda: Task("target"))

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"ftdfast.transfer.TargetData")
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = t.detach().cpu().contiguous()
            h.update(str((a.dtype, tuple(a.shape))).encode())
            h.update(a.numpy().tobytes())
        return h.hexdigest()


def as_target(target: Any) -> Any:
    """``target`` as a classification TaskData-like object, with its inputs checked.

    Accepts a ``TaskData`` (classification) or a tuple ``(x_train, y_train, x_test, y_test)`` of tensors or
    arrays (inputs float, labels integers 0..C-1, C = the largest label + 1).

    Raises:
        ValueError: a regression task, empty splits, or fewer than two classes in the training labels.
        TypeError: anything else.
    """
    if isinstance(target, (tuple, list)):
        if len(target) != 4:
            raise TypeError(f"target as a tuple must be (x_train, y_train, x_test, y_test), got {len(target)} items")
        x_tr, y_tr, x_te, y_te = (torch.as_tensor(np.asarray(t) if not torch.is_tensor(t) else t) for t in target)
        for name, y in (("y_train", y_tr), ("y_test", y_te)):
            if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
                raise ValueError(f"target {name} must be integer class labels (n,), got {y.dtype} {tuple(y.shape)}")
        for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
            if len(x) == 0 or len(x) != len(y):
                raise ValueError(f"target x_{split} has {len(x)} samples and y_{split} {len(y)}; they must match "
                                 "and be at least 1")
        if int(min(y_tr.min(), y_te.min())) < 0:
            raise ValueError("target labels must be class indices 0..C-1; got a negative label")
        C = int(max(y_tr.max(), y_te.max())) + 1
        target = TargetData(x_tr.float(), y_tr.long(), x_te.float(), y_te.long(), C)
    elif not all(hasattr(target, a) for a in ("x_train", "y_train", "x_test", "y_test", "loss", "num_classes")):
        raise TypeError(f"target must be a TaskData or a tuple (x_train, y_train, x_test, y_test), "
                        f"got {type(target).__name__}")
    if target.loss != "cross_entropy":
        raise ValueError(f"target has loss={target.loss!r}: ranking sources needs a classification target")
    present = torch.unique(target.y_train).numel()
    if present < 2:
        raise ValueError(f"the target's training labels hold {present} class: transferability needs at least two "
                         "classes to tell apart; give a target with two or more labelled classes")
    return target


@dataclass(eq=False)
class Source:
    """One candidate source: its trained network, the dotted name of its head (an ``nn.Linear``), and, where
    it was given as a task, its data (``data``: a ``TaskData``), the architecture its networks are trained
    with (``arch``) and ``trainer(seed) -> network``, which gives the network of each seed (as the distance
    step pairs N_a^s with N_b^s: both start from the initialization of seed s). ``model`` is the network
    of the first seed; estimators that read one source network use it."""

    name: str
    model: nn.Module
    head: str
    data: Any = None
    arch: Optional[str] = None
    trainer: Optional[Callable[[int], nn.Module]] = None
    _nets: Dict[int, nn.Module] = field(default_factory=dict, repr=False)

    def network(self, seed: Optional[int]) -> nn.Module:
        """The source's network paired with the target's network of ``seed``: the one trained from that seed
        for task sources, ``model`` for trained networks (and for ``seed=None``)."""
        if self.trainer is None or seed is None:
            return self.model
        if seed not in self._nets:
            self._nets[seed] = self.trainer(seed)
        return self._nets[seed]

    @property
    def width(self) -> int:
        """The number of outputs of the head."""
        return int(self.model.get_submodule(self.head).out_features)

    def body_signature(self) -> Tuple:
        """Names and shapes of the trainable parameters outside the head (sources with equal signatures
        share the target's networks)."""
        return tuple((n, tuple(p.shape)) for n, p in self.model.named_parameters()
                     if p.requires_grad and not in_module(n, self.head))


def in_module(param_name: str, module_name: str) -> bool:
    """Whether parameter ``param_name`` belongs to the submodule ``module_name``."""
    return param_name.startswith(module_name + ".") or module_name == ""


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_input_fits(source: Source, x: torch.Tensor) -> None:
    """Run ``source.model`` on one target sample; a ValueError naming the fix if it cannot take it."""
    try:
        with torch.no_grad():
            out = source.model(x[:1].to(model_device(source.model)))
    except Exception as e:  # the shape error of whichever layer refuses the input
        raise ValueError(f"source {source.name!r} cannot take the target's inputs of shape "
                         f"{tuple(x.shape[1:])}: {type(e).__name__}: {e}. Bring the target to the source's "
                         "input format (channels, size) or leave this source out") from e
    if not torch.is_tensor(out) or out.dim() != 2:
        raise ValueError(f"source {source.name!r} returns {type(out).__name__} "
                         f"{tuple(out.shape) if torch.is_tensor(out) else ''} on the target's inputs; a source must "
                         "be a classifier returning logits (n, outputs)")


class Context:
    """Shared, memoized computations for scoring ``sources`` on ``target``.

    Args:
        sources: the :class:`Source` objects being ranked.
        target: the target data (from :func:`as_target`).
        seeds: seeds of the target's networks (each trained once per architecture group).
        target_model: the target's own trained network; then ``seeds`` are not used for it.
        config: how the target's networks are trained (default: the distance step's
            ``ftdfast.distance.matrix.DEFAULT_CONFIG``).
        arch, cache, num_outputs: for sources given as tasks: the architecture, the ``ftdfast.Cache``
            (or None) and the shared head width their networks were trained with (``get_trained``).
        device: where target networks are trained (default: the source's device).
        progress: progress bars for training.
    """

    def __init__(self, sources: Sequence[Source], target: Any, *, seeds: Sequence[int] = (0,),
                 target_model: Optional[nn.Module] = None, target_head: Optional[str] = None,
                 config: Optional[TrainConfig] = None, arch: Optional[str] = None, cache=None,
                 num_outputs: Optional[int] = None, device=None, progress: bool = False):
        self.sources = list(sources)
        self.target = target
        self.seeds = [int(s) for s in seeds]
        self.target_model = target_model
        self.target_head = target_head
        self.config = config or DEFAULT_CONFIG
        self.arch, self.cache, self.num_outputs = arch, cache, num_outputs
        self.device = device
        self.progress = progress
        self._memo: Dict[Hashable, Any] = {}

    # ------------------------------------------------------------------ generic memo
    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked for, the stored value afterwards."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # ------------------------------------------------------------------ target data
    def data(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the target's ``split`` (``"train"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {SPLITS}")
        return getattr(self.target, f"x_{split}"), getattr(self.target, f"y_{split}")

    def labels(self, split: str) -> np.ndarray:
        """The target's labels of ``split`` as int64 (n,)."""
        return self.data(split)[1].cpu().numpy().astype(np.int64)

    # ------------------------------------------------------------------ source outputs and features
    def _pass(self, source: Source, split: str) -> Tuple[np.ndarray, np.ndarray]:
        return self.cached(("pass", source.name, split), lambda: forward_with_features(
            source.model, source.head, self.data(split)[0]))

    def outputs(self, source: Source, split: str) -> np.ndarray:
        """The source's softmax outputs on the target's ``split``: float64 (n, Z), rows summing to 1."""
        return self._pass(source, split)[1]

    def features(self, source: Source, split: str) -> np.ndarray:
        """The source's penultimate features (its head's input, flattened) on ``split``: float64 (n, D)."""
        return self._pass(source, split)[0]

    # ------------------------------------------------------------------ networks
    def probe_network(self, source: Source, seed: Optional[int] = None) -> nn.Module:
        """``source.network(seed)`` with its head replaced by a linear head fitted on the target's training split
        (:func:`~ftdfast.transfer.probe.fit_linear_head` on the source's features), as wide as the
        target's networks of the source's group (so parameter shapes match theirs)."""
        def make():
            width = max(int(self.target.num_classes), self.group_width(source))
            net = source.network(seed)
            feats, _ = forward_with_features(net, source.head, self.data("train")[0])
            return with_head(net, source.head, fit_linear_head(feats, self.labels("train"), width))
        return self.cached(("probe", source.name, seed if source.trainer is not None else None), make)

    def group_width(self, source: Source) -> int:
        """The head width of the target's networks for ``source``: the shared width of task sources, else the
        widest head among the sources with the same body as ``source`` (at least the target's class count)."""
        if source.arch is not None:
            return int(self.num_outputs)
        sig = source.body_signature()
        widths = [s.width for s in self.sources if s.arch is None and s.body_signature() == sig]
        return max([int(self.target.num_classes)] + widths)

    def target_networks(self, source: Source) -> List[Tuple[Optional[int], nn.Module, str]]:
        """``(seed, network, head name)`` of each of the target's networks to compare ``source`` with.

        ``target_model`` when given (seed None); else for each seed: for task sources, ``get_trained`` with
        their architecture and shared head width (cached on disk like the distance step's networks);
        for module sources, a re-initialized copy of the source with a head of :meth:`group_width`
        outputs, trained with ``config`` (one network per seed per group of sources with the same body).
        """
        if self.target_model is not None:
            return [(None, self.target_model, self.target_head)]
        if source.arch is not None:
            key = ("target", "arch", source.arch)
        else:
            key = ("target", "body", source.body_signature(), self.group_width(source))
        return self.cached(key, lambda: [(s, *self._train_target(source, s)) for s in self.seeds])

    def _train_target(self, source: Source, seed: int) -> Tuple[nn.Module, str]:
        if source.arch is not None:
            net, _ = get_trained(self.cache, self.target, source.arch, seed, self.config,
                                 num_outputs=self.num_outputs, device=self.device, progress=self.progress)
            return net, find_head(net)
        net = reinitialized(source.model, source.head, self.group_width(source), seed)
        train_model(net, self.target, self.config, seed=seed, device=self.device, progress=self.progress)
        return net.eval(), source.head

    # ------------------------------------------------------------------ Fishers
    def fisher(self, key: Hashable, model: nn.Module, split: str, kind: str, mc_samples: int = 1) -> FisherDiagonal:
        """The diagonal Fisher (``fisher_diagonal``, cross-entropy, ``fisher=kind``) of ``model`` on the target's
        ``split``, memoized under ``key`` (which must identify the model). ``"mc"`` draws labels from a
        generator seeded with 0, the same for every model."""
        def compute():
            gen = torch.Generator().manual_seed(0) if kind == "mc" else None
            return fisher_diagonal(model.eval(), self.data(split), loss="cross_entropy", fisher=kind,
                                   mc_samples=mc_samples, generator=gen, progress=False)
        return self.cached(("fisher", key, split, kind, mc_samples), compute)


def forward_with_features(model: nn.Module, head: str, x: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """``(features (n, D), softmax outputs (n, Z))`` of ``model`` (eval mode, no grad) on ``x (n, ...)``,
    float64 numpy; the features are the input of the submodule ``head``, captured by a forward pre-hook."""
    captured: List[torch.Tensor] = []
    hook = model.get_submodule(head).register_forward_pre_hook(
        lambda _m, inputs: captured.append(inputs[0].detach().reshape(len(inputs[0]), -1)))
    dev = model_device(model)
    feats, probs = [], []
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), BATCH):
                captured.clear()
                out = model(x[i:i + BATCH].to(dev))
                if len(captured) != 1:
                    raise ValueError(f"the head {head!r} ran {len(captured)} times in one forward; name the "
                                     "classifier that runs once per forward with head_module=")
                feats.append(captured[0].double().cpu())
                probs.append(torch.softmax(out.double(), dim=1).cpu())
    finally:
        hook.remove()
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()
