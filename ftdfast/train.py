"""Training and evaluation of the task networks: :func:`train_model`, :func:`evaluate`, :func:`get_trained`.

``data`` is a :class:`ftdfast.tasks.TaskData` or anything with the same fields (duck-typed):
``x_train (n, c, h, w)``, ``y_train`` (``(n,)`` int64 class indices for ``loss="cross_entropy"``,
``(n, c', h, w)`` float targets for ``loss="mse"``), ``x_test``, ``y_test``, ``num_classes``
(``None`` for regression), ``loss``, ``fingerprint()`` and ``task`` (with ``to_dict()`` and ``name``).
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .progress import progress_bar

LOSSES = ("cross_entropy", "mse")
ON_EPSILON = ("warn", "raise")


# ------------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class TrainConfig:
    """How a task network is trained.

    epochs: passes over the training set (0: no training, the network is only evaluated).
    batch_size, lr, weight_decay: Adam's mini-batch size, learning rate and L2 penalty.
    augment: random crops and horizontal flips of the training images (classification only).
    epsilon: the paper's epsilon-approximation: the network must reach accuracy >= 1 - epsilon on the
        check split (``None``: not checked).  on_epsilon: what a miss does: ``"warn"`` or ``"raise"``
        (RuntimeError).
    until_epsilon: the epsilon mode: ``epochs`` becomes a maximum; after every epoch the accuracy on the
        check split is measured, and training stops as soon as it reaches 1 - epsilon, or when it has not
        improved for ``patience`` epochs (a plateau; the best epoch's weights are then kept).  Needs
        ``epsilon``.  Without it (default) exactly ``epochs`` epochs run and the accuracy is checked once.
    validation: fraction of the training split held out (a fixed draw per task, independent of the seed)
        as the check split.  0 (default): the check split is the test split, as in the paper's
        definition of an epsilon-approximation network.
    """
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    augment: bool = False
    epsilon: Optional[float] = None
    on_epsilon: str = "warn"
    weight_decay: float = 0.0
    until_epsilon: bool = False
    patience: int = 3
    validation: float = 0.0

    def __post_init__(self):
        def bad(name: str, want: str):
            raise ValueError(f"TrainConfig: {name} must be {want}, got {getattr(self, name)!r}")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
                and math.isfinite(v)

        if not is_int(self.epochs) or self.epochs < 0:
            bad("epochs", "an int >= 0")
        if not is_int(self.batch_size) or self.batch_size < 1:
            bad("batch_size", "an int >= 1")
        if not is_real(self.lr) or self.lr <= 0:
            bad("lr", "a finite number > 0")
        if not isinstance(self.augment, bool):
            bad("augment", "True or False")
        if self.epsilon is not None and (not is_real(self.epsilon) or not 0 <= self.epsilon <= 1):
            bad("epsilon", "None or a number in [0, 1] (the accuracy target is 1 - epsilon)")
        if self.on_epsilon not in ON_EPSILON:
            bad("on_epsilon", f"one of {ON_EPSILON}")
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            bad("weight_decay", "a finite number >= 0")
        if not isinstance(self.until_epsilon, bool):
            bad("until_epsilon", "True or False")
        if self.until_epsilon and self.epsilon is None:
            raise ValueError("TrainConfig: until_epsilon=True trains until accuracy >= 1 - epsilon: set epsilon "
                             "(e.g. epsilon=0.02)")
        if not is_int(self.patience) or self.patience < 1:
            bad("patience", "an int >= 1 (epochs without improvement before stopping)")
        if not is_real(self.validation) or not 0 <= self.validation < 1:
            bad("validation", "a fraction in [0, 1) of the training split to hold out")
        # canonical Python types, so that to_dict() (and cache keys) do not depend on how they were given
        object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "weight_decay", float(self.weight_decay))
        object.__setattr__(self, "patience", int(self.patience))
        object.__setattr__(self, "validation", float(self.validation))
        if self.epsilon is not None:
            object.__setattr__(self, "epsilon", float(self.epsilon))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        return cls(**d)

    @property
    def check_split(self) -> str:
        """``"validation"`` when a fraction of the training split is held out, else ``"test"``."""
        return "validation" if self.validation > 0 else "test"


@dataclass
class TrainResult:
    """What :func:`train_model` measured.

    test_accuracy: fraction of ``x_test`` classified right (``None`` for regression); test_loss: mean
    test loss (cross-entropy per sample, MSE per element); train_loss_history: the mean training loss of
    each epoch; seconds: training wall time; epsilon_ok: test_accuracy >= 1 - epsilon (``None`` when
    not checked: no epsilon, or a regression task); from_cache: loaded by :func:`get_trained`.
    epochs_run: epochs trained; check_accuracy: accuracy on the check split (``config.check_split``) that
    the epsilon condition is judged on (equal to test_accuracy without a validation split);
    check_history: that accuracy after each epoch (epsilon mode only); stop_reason: ``"epochs"`` (all
    epochs ran), ``"epsilon"`` (reached 1 - epsilon), ``"plateau"`` (no improvement for ``patience`` epochs).
    """
    test_accuracy: Optional[float]
    test_loss: float
    train_loss_history: List[float] = field(default_factory=list)
    seconds: float = 0.0
    epsilon_ok: Optional[bool] = None
    from_cache: bool = False
    epochs_run: int = 0
    check_accuracy: Optional[float] = None
    check_history: List[float] = field(default_factory=list)
    stop_reason: str = "epochs"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed_everything needs an int seed, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ------------------------------------------------------------------------------------------ helpers
def _model_device(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; train_model/evaluate support {LOSSES}")


def _batch_loss(out: torch.Tensor, y: torch.Tensor, loss: str, reduction: str = "mean") -> torch.Tensor:
    if loss == "cross_entropy":
        if out.dim() != 2:
            raise ValueError(f"cross_entropy needs logits (n, k) from the model, got shape {tuple(out.shape)}")
        if y.dim() != 1 or y.dtype != torch.long:
            raise ValueError(f"cross_entropy needs int64 class labels (n,), got {y.dtype} {tuple(y.shape)}")
        return F.cross_entropy(out, y, reduction=reduction)
    if out.shape != y.shape:
        raise ValueError(f"mse needs the model's output shape {tuple(out.shape)} to equal the targets' "
                         f"{tuple(y.shape)}: build the network with num_classes = the target channels")
    return F.mse_loss(out, y.to(out.dtype), reduction=reduction)


def _batches(n: int, batch_size: int) -> List[Tuple[int, int]]:
    """(start, stop) of each mini-batch; a last batch of one sample joins the previous one (BatchNorm
    cannot normalize a single 1x1 map in training mode)."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _local_augment(x: torch.Tensor, generator: torch.Generator, *, crop_padding: int = 2,
                   flip: bool = True) -> torch.Tensor:
    """Random crops (zero padding ``crop_padding``) and horizontal flips of ``x (n, c, h, w)``."""
    n, _, h, w = x.shape
    p = crop_padding
    if p > 0:
        padded = F.pad(x, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (n, 2), generator=generator)
        out = torch.empty_like(x)
        for oy, ox in torch.unique(off, dim=0).tolist():
            sel = ((off[:, 0] == oy) & (off[:, 1] == ox)).nonzero().squeeze(1)
            out[sel] = padded[sel, :, oy:oy + h, ox:ox + w]
        x = out
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def _augmenter():
    try:
        from .data import augment  # the data package's version when it exists
        return augment
    except ImportError:
        return _local_augment


def _task_name(data) -> str:
    return str(getattr(getattr(data, "task", None), "name", "task"))


def epsilon_miss_message(result: TrainResult, config: TrainConfig, name: str) -> str:
    """The sentence that reports a network that missed 1 - epsilon (task, accuracy, epochs, what to do)."""
    acc = result.check_accuracy if result.check_accuracy is not None else result.test_accuracy
    return (f"ftdfast: the network for task {name!r} reached {config.check_split} accuracy {acc:.4f} < "
            f"1 - epsilon = {1 - config.epsilon:.4f} (epsilon = {config.epsilon}) after {result.epochs_run} "
            f"epoch(s), stopped by {result.stop_reason}; train longer (max epochs = {config.epochs}), tune lr, "
            "or allow a larger epsilon")


def _check_epsilon(result: TrainResult, config: TrainConfig, name: str) -> None:
    if result.epsilon_ok is False:
        msg = epsilon_miss_message(result, config, name)
        if config.on_epsilon == "raise":
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def network_options(config: TrainConfig) -> Dict[str, Any]:
    """The options of ``config`` that change a trained network (cache keys): all but ``on_epsilon``."""
    d = config.to_dict()
    d.pop("on_epsilon")
    return d


def validation_split(n: int, fraction: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of a training split of n samples: a fixed draw (generator seed 0),
    so every network of a task, whatever its seed, sees the same held-out samples."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    k = int(round(n * fraction))
    if not 1 <= k < n:
        raise ValueError(f"holding out {fraction:.3g} of {n} training samples leaves no training or no "
                         "validation sample; use a larger split or another fraction")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return perm[k:].sort().values, perm[:k].sort().values


def check_data(data, config: TrainConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) the epsilon condition is judged on: the held-out part of the training split, or the test split."""
    if config.validation > 0:
        _, held = validation_split(len(data.x_train), config.validation)
        return data.x_train[held], data.y_train[held]
    return data.x_test, data.y_test


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str, batch_size: int = 512,
             device=None) -> Dict[str, Optional[float]]:
    """Test accuracy and mean loss of ``model`` on ``x (n, ...)``, ``y``, in eval mode under no_grad.

    Returns ``{"accuracy": fraction or None (mse), "loss": mean cross-entropy per sample or mean
    squared error per element}``.  Every submodule's train/eval mode is restored afterwards, and
    BatchNorm running statistics are not touched.
    """
    _check_loss(loss)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"evaluate needs as many (>0) inputs as targets, got {len(x)} and {len(y)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = _model_device(model, device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    total, correct, count = 0.0, 0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
                out = model(xb)
                total += float(_batch_loss(out, yb, loss, reduction="sum"))
                if loss == "cross_entropy":
                    correct += int((out.argmax(1) == yb).sum())
                    count += len(yb)
                else:
                    count += yb.numel()
    finally:
        for m, mode in modes:
            m.training = mode
    return {"accuracy": correct / len(x) if loss == "cross_entropy" else None, "loss": total / count}


# ------------------------------------------------------------------------------------------ training
def train_model(model: nn.Module, data, config: TrainConfig = TrainConfig(), *, seed: int = 0, device=None,
                progress: bool = True) -> TrainResult:
    """Train ``model`` on ``data.x_train, data.y_train`` with Adam, then evaluate it on the test split.

    Shuffling (and augmentation) use their own ``torch.Generator``s seeded with ``seed``, so two runs
    from the same initial weights are identical on the CPU.  The model is moved to ``device`` (default:
    where its parameters are) and returned in eval mode.  A non-finite loss raises RuntimeError naming
    the epoch and step; a missed epsilon target warns or raises (``config.on_epsilon``).  With
    ``config.until_epsilon`` training stops at 1 - epsilon or on a plateau (see :class:`TrainConfig`);
    with ``config.validation`` the held-out part of the training split is never trained on.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    loss = getattr(data, "loss", None)
    _check_loss(loss)
    x, y = data.x_train, data.y_train
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"the training split needs as many (>0) inputs as targets, got {len(x)} and {len(y)}")
    if config.augment and loss != "cross_entropy":
        raise ValueError("augment=True transforms the inputs only, which would misalign pixel-to-pixel "
                         f"targets (loss={loss!r}): use augment=False for regression tasks")
    dev = _model_device(model, device)
    model.to(dev)
    name = _task_name(data)
    num_classes = getattr(data, "num_classes", None)
    if config.validation > 0:
        kept, _ = validation_split(len(x), config.validation)
        x, y = x[kept], y[kept]
    x_check, y_check = check_data(data, config)
    watch = config.until_epsilon and loss == "cross_entropy"

    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(int(seed))
    aug_gen = torch.Generator().manual_seed(int(seed) + 0x5EED)
    augment = _augmenter() if config.augment else None
    bounds = _batches(len(x), config.batch_size)
    history: List[float] = []
    checks: List[float] = []
    best, best_state, since_best, reason = -1.0, None, 0, "epochs"
    start = time.perf_counter()
    model.train()
    with progress_bar(total=config.epochs * len(bounds), enabled=progress, desc=f"train {name}",
                      unit="step") as bar:
        for epoch in range(config.epochs):
            perm = torch.randperm(len(x), generator=shuffle)
            total = 0.0
            for step, (a, b) in enumerate(bounds):
                idx = perm[a:b]
                xb, yb = x[idx], y[idx]
                if augment is not None:
                    xb = augment(xb, aug_gen)
                xb, yb = xb.to(dev), yb.to(dev)
                out = model(xb)
                if num_classes is not None and loss == "cross_entropy" and out.dim() == 2 \
                        and out.shape[1] < num_classes:
                    raise ValueError(f"the model has {out.shape[1]} outputs but task {name!r} has {num_classes} "
                                     "classes: build it with num_classes >= the task's")
                value = _batch_loss(out, yb, loss)
                v = value.item()
                if not math.isfinite(v):
                    raise RuntimeError(f"non-finite training loss {v} for task {name!r} at epoch "
                                       f"{epoch + 1}/{config.epochs}, step {step + 1}/{len(bounds)}: lower lr "
                                       f"(now {config.lr}) or check the data")
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                total += v * (b - a)
                bar.update(1)
            history.append(total / len(x))
            if watch:
                acc = evaluate(model, x_check, y_check, loss=loss, device=dev)["accuracy"]
                checks.append(acc)
                model.train()
                if acc > best:
                    best, since_best = acc, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                if acc >= 1 - config.epsilon:
                    reason = "epsilon"
                    break
                if since_best >= config.patience:
                    reason = "plateau"
                    break
    if watch and reason != "epsilon" and best_state is not None and checks and checks[-1] < best:
        model.load_state_dict(best_state)  # a plateau or the last epoch: keep the best epoch's weights
    seconds = time.perf_counter() - start
    model.eval()
    metrics = evaluate(model, data.x_test, data.y_test, loss=loss, device=dev)
    check_acc = metrics["accuracy"]
    if config.validation > 0 and metrics["accuracy"] is not None:
        check_acc = evaluate(model, x_check, y_check, loss=loss, device=dev)["accuracy"]
    eps_ok = None
    if config.epsilon is not None and check_acc is not None:
        eps_ok = bool(check_acc >= 1 - config.epsilon)
    result = TrainResult(test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
                         train_loss_history=history, seconds=seconds, epsilon_ok=eps_ok,
                         epochs_run=len(history), check_accuracy=check_acc, check_history=checks,
                         stop_reason=reason)
    _check_epsilon(result, config, name)
    return result


# ------------------------------------------------------------------------------------------ cached training
MODEL_KIND = "model"
_MODEL_FORMAT = "ftdfast.trained_model/1"


def _output_width(data, num_outputs: Optional[int]) -> int:
    if data.loss == "mse":
        channels = int(data.y_train.shape[1])
        if num_outputs is not None and num_outputs != channels:
            raise ValueError(f"num_outputs={num_outputs} but the regression targets have {channels} channels: "
                             "leave num_outputs=None for pixel-to-pixel tasks")
        return channels
    k = data.num_classes
    if num_outputs is None:
        return int(k)
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < k:
        raise ValueError(f"num_outputs={num_outputs!r} is less than the task's {k} classes: the head needs "
                         "at least one output per class (pass the largest class count of the task set)")
    return num_outputs


def get_trained(cache, data, arch: str, seed: int, config: TrainConfig = TrainConfig(), *,
                num_outputs: Optional[int] = None, device=None, progress: bool = True,
                model_options: Optional[Dict[str, Any]] = None) -> Tuple[nn.Module, TrainResult]:
    """A network of ``arch`` trained on ``data`` from seed ``seed``, from ``cache`` when it holds one.

    The head has ``num_outputs`` outputs (default ``data.num_classes``; regression: the target
    channels).  ``seed_everything(seed)`` runs before the model is built, so initial weights are
    reproducible.  The cache key covers the task, the data fingerprint, arch, model_options (e.g.
    ``{"width": 0.25}``), seed, config (all but ``on_epsilon``, which changes no network) and head width.  ``cache=None`` always trains.
    Returns ``(model in eval mode on device, TrainResult)``; ``result.from_cache`` says which.
    """
    from .models import build_model  # lazy: keeps `import ftdfast.train` light

    options = dict(model_options or {})
    width = _output_width(data, num_outputs)
    shape = tuple(data.x_train.shape[1:])
    if len(shape) != 3:
        raise ValueError(f"x_train must be images (n, c, h, w), got shape {tuple(data.x_train.shape)}")
    build = dict(arch=arch, in_channels=int(shape[0]), num_classes=width, input_size=int(min(shape[1:])),
                 **options)
    key = None
    if cache is not None:
        key = cache.key(format=_MODEL_FORMAT, task=data.task.to_dict(), data=data.fingerprint(), build=build,
                        seed=int(seed), config=network_options(config))
        entry = cache.load(MODEL_KIND, key)
        if entry is not None:
            model = build_model(**entry["build"])
            model.load_state_dict(entry["state_dict"])
            model.to(torch.device(device) if device is not None else "cpu").eval()
            result = TrainResult.from_dict(entry["result"])
            result.from_cache = True
            _check_epsilon(result, config, _task_name(data))
            return model, result
    seed_everything(seed)
    model = build_model(**build)
    result = train_model(model, data, config, seed=seed, device=device, progress=progress)
    if cache is not None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        cache.save(MODEL_KIND, key, {"format": _MODEL_FORMAT, "build": build, "state_dict": state,
                                     "result": result.to_dict()},
                   meta={"task": _task_name(data), "arch": arch, "seed": int(seed)})
    return model.eval(), result
