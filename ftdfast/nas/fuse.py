"""FUSE: pick the best of a few candidate networks by training a softmax mixture of them (TA-NAS).

The relaxed network's logits are ``z(x) = sum_c softmax(alpha)_c * z_c(x)`` over the candidates ``c`` and its
loss is the cross-entropy of ``z``. Alpha starts at zeros (weights ``1/K``). Each *round* has two phases:

1. **weights** (``w_steps`` training batches): alpha frozen, the candidates in training mode; one optimizer
   (Adam, or SGD with momentum) over every candidate's weights minimizes ``weight_loss`` (below);
2. **alpha**: the candidates in eval mode compute their logits on the whole validation set once, under
   ``no_grad`` (so BatchNorm running statistics and weights cannot change); then Adam fits alpha to those
   fixed logits, full batch, for up to ``alpha_steps`` steps, stopping early once no entry of alpha moves by
   ``alpha_tol`` or more in one step. The logits are computed once, so the alpha steps cost almost nothing:
   alpha gets the steps it needs to converge, which 10 mini-batch steps at lr 0.05 did not give it (the
   largest weight stayed at 0.42-0.54 on digits, so the pick rested on noise).

The schedule is one :class:`FuseConfig` (checked once, on construction). By default every round runs and the
winner is ``argmax alpha``. Optional:

* **halving** (``halving=True``): after every round but the last, the lower half of the candidates still in
  (by alpha) leaves: it is no longer trained, evaluated or mixed, and its alpha stays as it was (the
  ``"halving"`` schedule of :func:`~ftdfast.nas.search.fuse_search`). The survivors train on, so a fast
  learner cannot win on its lead alone; but a slow one can leave at the first rung, and on NAS-Bench-201 that
  cost more than it saved (docs/nas/README.md).
* **stopping rules** (``weight_loss="mixture"`` only): stop when the largest mixture weight reaches
  ``threshold`` (``"threshold"``), or when no entry of alpha moved by ``tol`` during a round
  (``"converged"``); otherwise after ``rounds`` rounds (``"rounds"``). On NAS-Bench-201 this converge-then-
  threshold schedule crowned the fastest learner (docs/nas/README.md).

**What the weights minimize** (``weight_loss``). ``"mixture"`` (the paper's FUSE): the mixture's
cross-entropy, so each candidate's gradient is ``softmax(alpha)_c`` times the mixture's residual and the
candidates co-adapt. ``"own"``: the sum of the candidates' own cross-entropies, so each candidate trains exactly
as it would alone on the same batches, and alpha (still fitted to the mixture on validation data after every
round) only reads the result.

The result keeps alpha's history and, per round, every candidate's own validation loss and accuracy (computed
from the same logits), so a pick can be audited.

**Equal terms.** Genotype candidates are built with fresh weights (seeded by ``seed`` and their index); a
module candidate is used as it is (trained in place). A search that passes last iteration's trained winner
as a module gives it a head start; :func:`~ftdfast.nas.search.fuse_search` redraws its weights (all of them, or
all but the classifier under the authors' ``"head"`` policy) unless told to keep them.

**Validation data.** Alpha must be fitted on data the weights were not trained on, and never on the test set:
carve it from the training data, e.g. with :func:`split_train_val`. (The authors' code updated alpha on the
test set; ftdfast does not.)

**Non-finite values.** A non-finite training loss, or non-finite validation logits, raise ``RuntimeError``
naming the round and step (as :func:`ftdfast.train.train_model` does), instead of returning an arbitrary winner.

**Batched.** Candidates that share a skeleton can run as one network (:mod:`ftdfast.nas.batched`):
``batched=True`` always, ``"auto"`` (the default) on CUDA and, on CPU, for small activations (where it is
faster), ``False`` never. The result equals the sequential run up to rounding.

**Checkpoints.** With ``checkpoint=path``, alpha, the weights, both optimizers' states, the batch sampler's
RNG state, the candidates still in and the histories are written atomically after every round; a later call
with the same candidates, data, seed and config resumes from the file (``rounds`` may grow unless ``halving``,
``threshold`` and ``tol`` may change; a run that stopped on ``threshold``/``converged`` returns its result
without further training). A file written for other candidates, data or settings is a ``ValueError``, and
so is a file of an earlier format (version 2 and before: delete it).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import atomic_torch_save
from ..progress import progress_bar
from .batched import BatchedCandidates
from .genotype import Genotype, as_genotype
from .network import Network
from .seeds import derive_seed

Data = Tuple[torch.Tensor, torch.Tensor]
CHECKPOINT_FORMAT = "ftdfast.nas.fuse"
CHECKPOINT_VERSION = 3        # 3: the identity holds a FuseConfig, the file the active candidates
WEIGHT_LOSSES = ("mixture", "own")       # what the weight phase minimizes (see the module docstring)


# ---------------------------------------------------------------------- data helpers
def split_train_val(x: torch.Tensor, y: torch.Tensor, fraction: float = 0.2, seed: int = 0) -> Tuple[Data, Data]:
    """A seeded random split of the *training* data: ``((x_train, y_train), (x_val, y_val))``.

    ``fraction`` of the samples (rounded, at least one) go to validation, the rest (at least one) stay for training.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    n = len(y)
    n_val = max(1, int(round(n * fraction)))
    if n_val >= n:
        raise ValueError(f"cannot split {n} samples into non-empty training and validation parts")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val].to(x.device), perm[n_val:].to(x.device)
    return (x[train], y[train]), (x[val], y[val])


def _check_data(data: Any, name: str) -> Data:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name} must be a pair (x, y) of tensors: x (n, c, h, w) images, y (n,) class indices")
    x, y = data
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must hold tensors, got ({type(x).__name__}, {type(y).__name__})")
    if x.dim() != 4:
        raise ValueError(f"{name}: x must be images (n, c, h, w), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{name}: y must be class indices (n,) of an integer dtype, got {y.dtype} {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if len(y) == 0:
        raise ValueError(f"{name} is empty")
    if int(y.min()) < 0:
        raise ValueError(f"{name}: class indices must be >= 0, found {int(y.min())}")
    return x, y.long()


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- the config
def check_int(owner: str, name: str, v: Any, lo: int) -> None:
    """``owner.name`` must be an int >= ``lo`` (bools are not ints here)."""
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{owner}.{name} must be an int >= {lo}, got {v!r}")


def check_choice(owner: str, name: str, v: Any, choices: Sequence[Any]) -> None:
    if v not in choices:
        raise ValueError(f"{owner}.{name} must be one of {tuple(choices)}, got {v!r}")


def _check_number(owner: str, name: str, v: Any) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{owner}.{name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class FuseConfig:
    """How one :func:`fuse` run spends its budget; every field is checked once, here.

    rounds, w_steps: ``rounds`` rounds, round ``r`` of ``w_steps`` weight steps (an int: the same for every
        round; a tuple of ``rounds`` ints: one per round).
    alpha_steps, alpha_lr, alpha_tol: at most ``alpha_steps`` full-batch Adam steps on alpha per round at
        ``alpha_lr``, ending early once no entry moves by ``alpha_tol`` (0: never early).
    w_lr, optimizer, momentum: the weights' optimizer, ``"adam"`` or ``"sgd"`` (with ``momentum``).
    weight_loss: ``"mixture"`` (the paper's) or ``"own"``; see the module docstring.
    halving: after every round but the last, the lower half of the candidates still in (by alpha) leaves:
        ``n`` candidates keep ``ceil(n / 2)`` (see :meth:`active_counts`).
    threshold, tol: the stopping rules, ``None`` = off (the default): stop when the largest mixture weight
        reaches ``threshold``, or when no entry of alpha moved by ``tol`` during a round. They need
        ``weight_loss="mixture"`` and no ``halving`` (there stopping would only cut the training short).
    batch_size: training batch; val_batch_size: the chunk of the validation forward passes (memory only).
    """
    rounds: int = 10
    w_steps: Union[int, Tuple[int, ...]] = 50
    alpha_steps: int = 200
    alpha_lr: float = 0.1
    alpha_tol: float = 1e-3
    w_lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_loss: str = "mixture"
    halving: bool = False
    threshold: Optional[float] = None
    tol: Optional[float] = None
    batch_size: int = 64
    val_batch_size: int = 512

    def __post_init__(self):
        own = "FuseConfig"
        for name, lo in (("rounds", 1), ("alpha_steps", 1), ("batch_size", 1), ("val_batch_size", 1)):
            check_int(own, name, getattr(self, name), lo)
        if isinstance(self.w_steps, list):
            object.__setattr__(self, "w_steps", tuple(self.w_steps))
        if isinstance(self.w_steps, tuple):
            if len(self.w_steps) != self.rounds:
                raise ValueError(f"FuseConfig.w_steps has {len(self.w_steps)} entries for {self.rounds} rounds; "
                                 "give one per round, or one int for all")
            for r, s in enumerate(self.w_steps):
                check_int(own, f"w_steps[{r}]", s, 0)
        else:
            check_int(own, "w_steps", self.w_steps, 0)
        for name in ("alpha_lr", "alpha_tol", "w_lr", "momentum"):
            _check_number(own, name, getattr(self, name))
        check_choice(own, "optimizer", self.optimizer, ("adam", "sgd"))
        check_choice(own, "weight_loss", self.weight_loss, WEIGHT_LOSSES)
        if not isinstance(self.halving, bool):
            raise ValueError(f"FuseConfig.halving must be True or False, got {self.halving!r}")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and 0.0 < self.threshold <= 1.0):
            raise ValueError(f"FuseConfig.threshold must be in (0, 1] or None (no threshold stop), "
                             f"got {self.threshold!r}")
        if self.tol is not None:
            _check_number(own, "tol", self.tol)
        if (self.threshold is not None or self.tol is not None) and (self.weight_loss != "mixture" or self.halving):
            raise ValueError("FuseConfig.threshold and tol (the stopping rules) need weight_loss='mixture' and "
                             "halving=False; pass threshold=None, tol=None")

    def steps(self, r: int) -> int:
        """Weight steps of round ``r`` (0-based)."""
        return self.w_steps[r] if isinstance(self.w_steps, tuple) else self.w_steps

    def active_counts(self, k: int) -> List[int]:
        """Candidates in each round for ``k`` candidates: ``[k] * rounds`` without halving, else
        ``k, ceil(k / 2), ceil(k / 4), ...`` (never below 1)."""
        out = [k]
        for _ in range(self.rounds - 1):
            out.append(-(-out[-1] // 2) if self.halving else out[-1])
        return out

    def weight_steps(self, k: int) -> int:
        """Candidate-steps of a full run over ``k`` candidates: ``sum_r active_r * steps(r)`` (one weight step
        trains every candidate still in once; a threshold or convergence stop makes it fewer)."""
        return sum(n * self.steps(r) for r, n in enumerate(self.active_counts(k)))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["w_steps"] = list(self.w_steps) if isinstance(self.w_steps, tuple) else self.w_steps
        return d

    def identity(self) -> Dict[str, Any]:
        """What a checkpoint must match: everything but ``threshold`` and ``tol`` (which may change between
        calls, to cut a run short), ``rounds`` (which may grow, to extend a run; not under ``halving``, whose
        rungs depend on it) and ``val_batch_size`` (memory only)."""
        d = self.to_dict()
        for k in ("threshold", "tol", "val_batch_size") + (() if self.halving else ("rounds",)):
            d.pop(k)
        return d


# ---------------------------------------------------------------------- the mixture
class FuseMixture(nn.Module):
    """``forward(x) = sum_c softmax(alpha)_c * candidate_c(x)``: ``(n, ...) -> (n, num_classes)`` logits.

    ``candidates``: modules (or a :class:`BatchedCandidates`); ``alpha`` (K,) starts at zeros; ``batched``: as
    in :class:`BatchedCandidates`.
    """

    def __init__(self, candidates: Union[Sequence[nn.Module], BatchedCandidates], *,
                 batched: Union[bool, str] = True):
        super().__init__()
        self.candidates = (candidates if isinstance(candidates, BatchedCandidates)
                           else BatchedCandidates(list(candidates), batched=batched))
        self.alpha = nn.Parameter(torch.zeros(len(self.candidates.nets)))

    def weights(self) -> torch.Tensor:
        """softmax(alpha), (K,)."""
        return torch.softmax(self.alpha, dim=0)

    @staticmethod
    def mix(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``(n, K, k), (K,) -> (n, k)``: ``sum_c weights_c * logits[:, c]``."""
        return (logits * weights.to(logits.dtype)[None, :, None]).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.candidates(x), self.weights())


# ---------------------------------------------------------------------- result
@dataclass
class FuseResult:
    """What :func:`fuse` found. ``alpha_history``/``softmax_history`` have one entry per round plus the start
    (entry 0: zeros, ``1/K``); the other histories one entry per round. Under ``halving`` a candidate that has
    left has softmax weight 0 and ``None`` for its validation loss and accuracy; ``best_index`` is argmax
    alpha among the candidates still in."""
    best_index: int
    best_genotype: Optional[Genotype]
    genotypes: List[Optional[Genotype]]
    alpha_history: List[List[float]]
    softmax_history: List[List[float]]
    train_loss_history: List[float]             # per round: mean mixture loss of its weight steps
    val_loss_history: List[float]               # per round: the mixture's validation loss after the alpha phase
    candidate_val_loss_history: List[List[float]]   # per round, per candidate: its own validation loss
    val_accuracy_history: List[List[float]]     # per round, per candidate: its own validation accuracy
    alpha_steps_history: List[int]              # per round: alpha steps taken (<= alpha_steps)
    active_history: List[List[int]]             # per round: the candidates that trained in it (halving)
    rounds_run: int
    stop_reason: str                            # "threshold" | "converged" | "rounds"
    seconds: float
    config: FuseConfig
    candidates: List[nn.Module] = field(repr=False)   # the trained candidates, in eval mode

    @property
    def alpha(self) -> List[float]:
        return self.alpha_history[-1]

    @property
    def weights(self) -> List[float]:
        return self.softmax_history[-1]

    @property
    def best_module(self) -> nn.Module:
        return self.candidates[self.best_index]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (no modules)."""
        return {"best_index": self.best_index,
                "best_genotype": None if self.best_genotype is None else _genotype_dict(self.best_genotype),
                "genotypes": [None if g is None else _genotype_dict(g) for g in self.genotypes],
                "alpha_history": self.alpha_history, "softmax_history": self.softmax_history,
                "train_loss_history": self.train_loss_history, "val_loss_history": self.val_loss_history,
                "candidate_val_loss_history": self.candidate_val_loss_history,
                "val_accuracy_history": self.val_accuracy_history, "alpha_steps_history": self.alpha_steps_history,
                "active_history": self.active_history, "config": self.config.to_dict(),
                "rounds_run": self.rounds_run, "stop_reason": self.stop_reason, "seconds": self.seconds}


def _genotype_dict(g: Any) -> Any:
    return g.to_dict() if hasattr(g, "to_dict") else str(g)


# ---------------------------------------------------------------------- checkpoints
class _Checkpoint:
    """The file of one FUSE run: ``identity`` (candidates, skeleton, settings, data fingerprints) must match."""

    def __init__(self, path: Optional[Union[str, os.PathLike]], identity: Dict[str, Any]):
        self.path = os.fspath(path) if path is not None else None
        self.identity = json.loads(json.dumps(identity))

    def load(self) -> Optional[Dict[str, Any]]:
        if self.path is None or not os.path.exists(self.path):
            return None
        path = self.path
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read the FUSE checkpoint {path}: {type(e).__name__}: {e}; "
                             f"delete it to start afresh") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a FUSE checkpoint written by ftdfast; delete it or pass another path")
        if payload.get("version", 0) != CHECKPOINT_VERSION:
            raise ValueError(f"{path} has FUSE checkpoint version {payload.get('version')}; this ftdfast reads "
                             f"version {CHECKPOINT_VERSION}: delete it to start afresh")
        theirs = json.loads(payload["identity"])
        if theirs != self.identity:
            keys = sorted(k for k in set(theirs) | set(self.identity) if theirs.get(k) != self.identity.get(k))
            raise ValueError(f"the FUSE checkpoint {path} was written for a different run (differs in: "
                             f"{', '.join(keys)}); delete it or pass another checkpoint path")
        return payload

    def restore(self, run: "_FuseRun") -> None:
        ck = self.load()
        if ck is None:
            return
        for net, sd in zip(run.nets, ck["candidates"]):
            net.load_state_dict(sd)
        run.w_opt.load_state_dict(ck["w_opt"])
        run.a_opt.load_state_dict(ck["a_opt"])
        with torch.no_grad():
            run.model.alpha.copy_(ck["alpha"].to(run.model.alpha))
        run.gen.set_state(ck["generator"])
        run.hist = ck["history"]
        run.set_active(ck["active"])
        run.round, run.seconds_before = ck["round"], ck["seconds"]
        run.stop_reason = ck["stop_reason"] if ck["stop_reason"] in ("threshold", "converged") else None

    def save(self, run: "_FuseRun", rounds: int, seconds: float) -> None:
        if self.path is None:
            return
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                           "identity": json.dumps(self.identity), "round": run.round,
                           "stop_reason": run.stop_reason or ("rounds" if run.round >= rounds else None),
                           "seconds": seconds, "alpha": run.model.alpha.detach().cpu().clone(),
                           "w_opt": run.w_opt.state_dict(), "a_opt": run.a_opt.state_dict(),
                           "candidates": [{k: v.detach().cpu() for k, v in net.state_dict().items()}
                                          for net in run.nets],
                           "generator": run.gen.get_state(), "history": run.hist, "active": run.active},
                          self.path)


def _describe(cand: Any) -> Any:
    if isinstance(cand, Genotype):
        return {"genotype": cand.to_dict()}
    d = {"module": type(cand).__name__,
         "state": [[k, list(v.shape)] for k, v in cand.state_dict().items()]}
    g = getattr(cand, "genotype", None)
    if g is not None:
        d["genotype"] = _genotype_dict(g)
    return d


# ---------------------------------------------------------------------- one FUSE run
@dataclass
class _FuseRun:
    """The mutable state of one FUSE run (what a checkpoint stores). ``active``: the candidates still in (all
    of them unless ``halving``); ``subset`` runs them (rebuilt by :meth:`set_active`)."""
    model: FuseMixture
    nets: List[nn.Module]
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer
    gen: torch.Generator
    hist: Dict[str, list]
    device: torch.device
    dtype: torch.dtype
    batched: Union[bool, str]
    active: List[int] = field(default_factory=list)
    subset: Optional[BatchedCandidates] = None
    round: int = 0
    stop_reason: Optional[str] = None
    seconds_before: float = 0.0

    def set_active(self, active: Sequence[int]) -> None:
        self.active = sorted(int(k) for k in active)
        self.subset = (self.model.candidates if len(self.active) == len(self.nets)
                       else BatchedCandidates([self.nets[k] for k in self.active], batched=self.batched))

    def weights(self) -> torch.Tensor:
        """softmax of alpha over the active candidates, ``(len(active),)``."""
        return torch.softmax(self.model.alpha[self.active], 0)


def _weight_loss(logits: torch.Tensor, y: torch.Tensor, p: torch.Tensor, weight_loss: str) -> Tuple[torch.Tensor,
                                                                                                     float]:
    """The weight phase's objective for logits ``(n, K, k)``: ``"mixture"``, the mixture's cross-entropy;
    ``"own"``, the sum of the candidates' own cross-entropies (each candidate's gradient is the one it would get
    trained alone). Returns it and the value recorded (the mixture's loss, or the candidates' mean own loss)."""
    if weight_loss == "mixture":
        loss = F.cross_entropy(FuseMixture.mix(logits, p), y)
        return loss, float(loss.detach())
    own = F.cross_entropy(logits.transpose(1, 2), y[:, None].expand(-1, logits.shape[1]), reduction="none").mean(0)
    return own.sum(), float(own.detach().mean())


def _weight_phase(run: _FuseRun, x: torch.Tensor, y: torch.Tensor, steps: int, config: FuseConfig, bar) -> float:
    """``steps`` optimizer steps on the active candidates' weights (alpha frozen); the mean recorded loss."""
    run.model.train()
    p = run.weights().detach()
    total = 0.0
    for step in range(steps):
        idx = torch.randperm(len(y), generator=run.gen)[:config.batch_size]
        xb, yb = x[idx].to(device=run.device, dtype=run.dtype), y[idx].to(run.device)
        loss, v = _weight_loss(run.subset(xb), yb, p, config.weight_loss)
        if not math.isfinite(v):
            raise RuntimeError(f"FUSE: non-finite training loss {v} at round {run.round + 1}/{config.rounds}, "
                               f"weight step {step + 1}/{steps}: lower w_lr (now {config.w_lr}) or check "
                               "train_data for NaN/inf values")
        run.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        run.w_opt.step()
        total += v
        bar.update(1)
    return total / steps if steps else math.nan


def _validation_logits(run: _FuseRun, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The active candidates' logits on ``x``, eval mode, no graph: ``(n, len(active), k)``."""
    run.model.eval()
    with torch.no_grad():
        return torch.cat([run.subset(x[i:i + batch_size].to(device=run.device, dtype=run.dtype))
                          for i in range(0, len(x), batch_size)])


def _alpha_phase(run: _FuseRun, x: torch.Tensor, y: torch.Tensor, config: FuseConfig) -> Tuple[float, List[float],
                                                                                            List[float], int]:
    """Fit the active candidates' alpha to their fixed validation logits, full batch, until it stops moving
    (the others' alpha stays as it is).

    Returns the mixture's validation loss, each active candidate's own validation loss and accuracy, and the
    number of alpha steps taken."""
    logits = _validation_logits(run, x, config.val_batch_size)
    yd = y.to(run.device)
    bad = [run.active[k] for k in range(logits.shape[1]) if not bool(torch.isfinite(logits[:, k]).all())]
    if bad:
        raise RuntimeError(f"FUSE: candidate(s) {bad} give non-finite validation logits at round "
                           f"{run.round + 1}/{config.rounds} (alpha phase, before alpha step 1): check val_data for "
                           "NaN/inf values, or lower w_lr if the weights diverged")
    alpha = run.model.alpha
    frozen = alpha.detach().clone()
    out = [k for k in range(len(run.nets)) if k not in run.active]
    taken = 0
    for step in range(config.alpha_steps):
        before = alpha.detach().clone()
        loss = F.cross_entropy(FuseMixture.mix(logits, run.weights()), yd)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"FUSE: non-finite validation loss at round {run.round + 1}/{config.rounds}, alpha "
                               f"step {step + 1}/{config.alpha_steps}: lower alpha_lr")
        run.a_opt.zero_grad(set_to_none=True)
        loss.backward()
        run.a_opt.step()
        if out:         # Adam's momentum would move them: they keep the value they left with
            with torch.no_grad():
                alpha[out] = frozen[out]
        taken += 1
        if float((alpha.detach() - before).abs().max()) < config.alpha_tol:
            break
    with torch.no_grad():
        mixed = float(F.cross_entropy(FuseMixture.mix(logits, run.weights()), yd))
        own = F.cross_entropy(logits.transpose(1, 2), yd[:, None].expand(-1, logits.shape[1]),
                              reduction="none").mean(0)
        acc = (logits.argmax(2) == yd[:, None]).double().mean(0)
    return mixed, [float(v) for v in own.cpu()], [float(v) for v in acc.cpu()], taken


def _spread(run: _FuseRun, values: Sequence[float]) -> List[Optional[float]]:
    """Per-active values -> one entry per candidate, ``None`` for those that left."""
    out: List[Optional[float]] = [None] * len(run.nets)
    for k, v in zip(run.active, values):
        out[k] = v
    return out


def _round(run: _FuseRun, train: Data, val: Data, config: FuseConfig, bar) -> None:
    """One round: the weight phase, the alpha phase, the histories, the halving and the stopping rules."""
    train_loss = _weight_phase(run, *train, config.steps(run.round), config, bar)
    a_before = run.model.alpha.detach().clone()
    val_loss, own_loss, own_acc, taken = _alpha_phase(run, *val, config)
    bar.update(1)
    run.round += 1
    alpha = run.model.alpha.detach()
    h = run.hist
    h["alpha"].append([float(a) for a in alpha.cpu()])
    h["softmax"].append([0.0 if v is None else v
                         for v in _spread(run, [float(a) for a in run.weights().detach().double().cpu()])])
    h["train_loss"].append(train_loss)
    h["val_loss"].append(val_loss)
    h["candidate_val_loss"].append(_spread(run, own_loss))
    h["val_accuracy"].append(_spread(run, own_acc))
    h["alpha_steps"].append(taken)
    h["active"].append(list(run.active))
    if config.halving and run.round < config.rounds:
        keep = config.active_counts(len(run.nets))[run.round]
        ranked = sorted(run.active, key=lambda k: (-h["alpha"][-1][k], k))
        run.set_active(ranked[:keep])
    if config.threshold is not None and max(h["softmax"][-1]) >= config.threshold:
        run.stop_reason = "threshold"
    elif config.tol is not None and float((alpha - a_before).abs().max()) < config.tol:
        run.stop_reason = "converged"


def _build(cand: Any, k: int, seed: int, skeleton: Dict[str, int]) -> Tuple[nn.Module, Optional[Genotype]]:
    if isinstance(cand, nn.Module):
        return cand, getattr(cand, "genotype", None)
    try:
        g = as_genotype(cand)
    except TypeError:
        raise TypeError(f"candidate {k} is a {type(cand).__name__}; candidates are Genotypes "
                        f"(or their dict/JSON forms) or nn.Modules") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "candidate", k))
        return Network(g, **skeleton), g


def fuse(candidates: Sequence[Any], train_data: Data, val_data: Data, config: Optional[FuseConfig] = None, *,
         channels: int = 16, layers: int = 3, num_classes: Optional[int] = None, in_channels: Optional[int] = None,
         seed: int = 0, device: Optional[Union[str, torch.device]] = None, dtype: torch.dtype = torch.float32,
         progress: bool = True, batched: Union[bool, str] = "auto",
         checkpoint: Optional[Union[str, os.PathLike]] = None) -> FuseResult:
    """Train the softmax mixture of ``candidates`` and return the winner; see the module docstring.

    Args:
        candidates: Genotypes (built as ``Network(g, channels, layers, num_classes, in_channels)``, each
            initialized from ``seed`` and its index) and/or ``nn.Module`` s mapping ``(n, c, h, w)`` to
            ``(n, num_classes)`` logits, used as they are: trained in place and moved to ``device``.
        train_data, val_data: ``(x (n, c, h, w) float, y (n,) int)`` pairs; ``val_data`` from the training
            data (:func:`split_train_val`), not the test set.
        config: the schedule (:class:`FuseConfig`; default ``FuseConfig()``).
        num_classes, in_channels: default to ``max label + 1`` and the images' channels; given, they are checked.
        seed: training batches are drawn from a generator seeded with ``seed``.
        device, dtype: where and in which dtype genotype-built candidates run (device defaults to the first
            module candidate's, else CPU).
        batched: run candidates that share a skeleton as one network (:mod:`ftdfast.nas.batched`): ``True``,
            ``False`` or ``"auto"`` (batched on CUDA, and on CPU while activations are small).
        checkpoint: a file to save to after every round and resume from.

    Returns:
        a :class:`FuseResult`. Deterministic for a given seed on CPU.
    """
    t0 = time.perf_counter()
    config = FuseConfig() if config is None else config
    if not isinstance(config, FuseConfig):
        raise TypeError(f"config must be a FuseConfig, got {type(config).__name__}")
    if isinstance(candidates, (nn.Module, Genotype, str, dict)) or not isinstance(candidates, Sequence):
        raise ValueError("candidates must be a list of Genotypes and/or nn.Modules")
    if len(candidates) == 0:
        raise ValueError("fuse needs at least one candidate, got an empty list")
    x_tr, y_tr = _check_data(train_data, "train_data")
    x_va, y_va = _check_data(val_data, "val_data")
    if x_va.shape[1:] != x_tr.shape[1:]:
        raise ValueError(f"val_data images have shape {tuple(x_va.shape[1:])} but train_data images "
                         f"{tuple(x_tr.shape[1:])}")
    if in_channels is None:
        in_channels = x_tr.shape[1]
    elif in_channels != x_tr.shape[1]:
        raise ValueError(f"in_channels={in_channels} but the images have {x_tr.shape[1]} channels "
                         f"(shape {tuple(x_tr.shape)}); pass in_channels={x_tr.shape[1]} or leave it out")
    top = max(int(y_tr.max()), int(y_va.max()))
    if num_classes is None:
        num_classes = top + 1
    elif top >= num_classes:
        raise ValueError(f"num_classes={num_classes} but the labels go up to {top}; "
                         f"pass num_classes>={top + 1} or leave it out")

    modules = [c for c in candidates if isinstance(c, nn.Module)]
    if device is None:
        params = [p for m in modules for p in m.parameters()]
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    skeleton = dict(channels=channels, layers=layers, num_classes=num_classes, in_channels=in_channels)
    nets, genotypes = [], []
    for k, cand in enumerate(candidates):
        net, g = _build(cand, k, seed, skeleton)
        if not isinstance(cand, nn.Module):
            net = net.to(device=device, dtype=dtype)
        nets.append(net.to(device))
        genotypes.append(g)
    work_dtype = next((p.dtype for p in nets[0].parameters() if p.is_floating_point()), dtype)
    _probe(nets, x_tr[:2].to(device=device, dtype=work_dtype), num_classes)

    model = FuseMixture(BatchedCandidates(nets, batched=batched)).to(device)
    with torch.no_grad():
        model.alpha.data = model.alpha.data.to(work_dtype)
    w_params = list(model.candidates.parameters())
    w_opt = (torch.optim.Adam(w_params, lr=config.w_lr) if config.optimizer == "adam"
             else torch.optim.SGD(w_params, lr=config.w_lr, momentum=config.momentum))
    K = len(nets)
    run = _FuseRun(model, nets, w_opt, torch.optim.Adam([model.alpha], lr=config.alpha_lr),
               torch.Generator().manual_seed(seed),
               {"alpha": [[0.0] * K], "softmax": [[1.0 / K] * K], "train_loss": [], "val_loss": [],
                "candidate_val_loss": [], "val_accuracy": [], "alpha_steps": [], "active": []},
               device, work_dtype, batched)
    run.set_active(range(K))
    ckpt = _Checkpoint(checkpoint, {
        "candidates": [_describe(c) for c in candidates], "skeleton": skeleton,
        "config": config.identity(), "seed": seed, "dtype": str(work_dtype),
        "train_data": _fingerprint(x_tr, y_tr), "val_data": _fingerprint(x_va, y_va)})
    ckpt.restore(run)

    todo = range(run.round, config.rounds) if run.stop_reason is None else range(0)
    with progress_bar(total=sum(config.steps(r) + 1 for r in todo), enabled=progress, desc="FUSE",
                      unit="step") as bar:
        while run.stop_reason is None and run.round < config.rounds:
            _round(run, (x_tr, y_tr), (x_va, y_va), config, bar)
            ckpt.save(run, config.rounds, run.seconds_before + time.perf_counter() - t0)
    model.eval()
    h = run.hist
    final = h["alpha"][-1]
    best = max(run.active, key=lambda k: (final[k], -k))
    return FuseResult(best_index=best, best_genotype=genotypes[best], genotypes=genotypes,
                      alpha_history=h["alpha"], softmax_history=h["softmax"], train_loss_history=h["train_loss"],
                      val_loss_history=h["val_loss"], candidate_val_loss_history=h["candidate_val_loss"],
                      val_accuracy_history=h["val_accuracy"], alpha_steps_history=h["alpha_steps"],
                      active_history=h["active"], rounds_run=run.round, stop_reason=run.stop_reason or "rounds",
                      seconds=run.seconds_before + time.perf_counter() - t0, config=config, candidates=nets)


def _probe(nets: Sequence[nn.Module], x: torch.Tensor, num_classes: int) -> None:
    """Each candidate must map ``x`` to ``(n, num_classes)``; run in eval mode so nothing changes."""
    for k, net in enumerate(nets):
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(x)
        except Exception as e:
            raise ValueError(f"candidate {k} ({type(net).__name__}) fails on inputs of shape {tuple(x.shape)}: "
                             f"{type(e).__name__}: {e}") from e
        finally:
            net.train(was)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"candidate {k} ({type(net).__name__}) returns {shape} for {len(x)} inputs; expected "
                             f"({len(x)}, {num_classes}) logits (num_classes={num_classes})")
