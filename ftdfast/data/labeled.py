"""``LabeledData``: a labelled image classification set (train and test split), plus the checks and
conversions every loader shares.

Index letters: n training samples, m test samples, c channels, h/w height/width.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .normalize import NormalizeArg, apply_stats, resolve_stats

Index = Union[int, Sequence[int], torch.Tensor, None]


@dataclass(frozen=True, eq=False)
class LabeledData:
    """Images and class labels, already normalized per channel.

    Attributes:
        name: the dataset's name (``"mnist"``, a file's stem, ...).
        x_train: (n, c, h, w) float32, normalized with ``mean``/``std``.
        y_train: (n,) int64 class indices in ``[0, len(classes))``.
        x_test: (m, c, h, w) float32.
        y_test: (m,) int64.
        classes: the class names, index order.
        mean, std: per channel (length c), on the [0, 1] pixel scale; already applied.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: Tuple[str, ...]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not self.classes:
            raise ValueError("classes is empty: a labelled dataset needs at least one class name")
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"class names must be unique, repeated: {dup}")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
                raise ValueError(f"x_{split} must be a float tensor of shape (n, c, h, w), got "
                                 f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
            if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype != torch.int64:
                raise ValueError(f"y_{split} must be an int64 tensor of shape (n,), got "
                                 f"{type(y).__name__} {tuple(getattr(y, 'shape', ()))} "
                                 f"{getattr(y, 'dtype', '')}")
            check_lengths(x.shape[0], y.shape[0], split)
            check_label_range(y, len(self.classes), f"y_{split}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"x_train images are {tuple(self.x_train.shape[1:])} but x_test images are "
                             f"{tuple(self.x_test.shape[1:])}; both splits need the same (c, h, w)")
        c = self.x_train.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean and std need one value per channel ({c}), got {len(self.mean)} and "
                             f"{len(self.std)}")

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(c, h, w) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """Hex sha256 of the four tensors (dtype, shape, bytes) and the class names; computed once."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            for t in (self.x_train, self.y_train, self.x_test, self.y_test):
                hash_tensor(h, t)
            h.update(repr(self.classes).encode())
            cached = h.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def subset(self, train: Index = None, test: Index = None) -> "LabeledData":
        """A copy with fewer samples: an int k keeps the first k, indices keep those; None keeps all."""
        return LabeledData(self.name, *_pick(self.x_train, self.y_train, train, "train"),
                           *_pick(self.x_test, self.y_test, test, "test"), self.classes, self.mean, self.std)

    def sample(self, train: Optional[int] = None, test: Optional[int] = None, seed: int = 0) -> "LabeledData":
        """A copy with ``train``/``test`` samples drawn at random without replacement (seeded; kept in their
        original order). Unlike :meth:`subset`'s first-k, this is safe for files sorted by class."""
        g = torch.Generator().manual_seed(seed)

        def pick(n: int, k: Optional[int], split: str):
            if k is None:
                return None
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
                raise ValueError(f"sample({split}={k!r}): keep between 1 and {n} samples")
            return torch.randperm(n, generator=g)[:k].sort().values
        return self.subset(train=pick(self.x_train.shape[0], train, "train"),
                           test=pick(self.x_test.shape[0], test, "test"))

    def __repr__(self) -> str:
        return (f"LabeledData({self.name!r}, train={self.x_train.shape[0]}, test={self.x_test.shape[0]}, "
                f"input_shape={self.input_shape}, classes={self.num_classes})")


def hash_tensor(h: "hashlib._Hash", t: torch.Tensor) -> None:
    """Feed ``t``'s dtype, shape and bytes into the hash ``h``."""
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    a = t.detach().cpu().contiguous()
    if a.numel():
        h.update(a.view(torch.uint8).numpy() if a.dtype != torch.bool else a.numpy())


def _pick(x: torch.Tensor, y: torch.Tensor, which: Index, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if which is None:
        return x, y
    if isinstance(which, (int, np.integer)) and not isinstance(which, bool):
        if not 1 <= which <= x.shape[0]:
            raise ValueError(f"subset({split}={which}): keep between 1 and {x.shape[0]} samples")
        return x[:which], y[:which]
    idx = torch.as_tensor(which, dtype=torch.long)
    if idx.dim() != 1 or idx.numel() == 0:
        raise ValueError(f"subset({split}=...) needs an int or a non-empty 1-D index sequence, "
                         f"got shape {tuple(idx.shape)}")
    if int(idx.min()) < -x.shape[0] or int(idx.max()) >= x.shape[0]:
        raise ValueError(f"subset({split}=...) has indices outside [0, {x.shape[0]})")
    return x[idx], y[idx]


# --- checks shared by the loaders -------------------------------------------------------------

def check_lengths(n_x: int, n_y: int, split: str) -> None:
    if n_x != n_y:
        raise ValueError(f"x_{split} has {n_x} samples but y_{split} has {n_y}; they must match")
    if n_x == 0:
        raise ValueError(f"x_{split} is empty (0 samples); both splits need at least one sample")


def check_label_range(y: torch.Tensor, num_classes: int, what: str) -> None:
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = int(((y < 0) | (y >= num_classes)).nonzero()[0, 0])
        raise ValueError(f"{what} has labels out of range [0, {num_classes}): label {int(y[bad])} at sample "
                         f"{bad}; labels must index the {num_classes} classes")


def as_tensor(a: Any, what: str) -> torch.Tensor:
    """A tensor view of a tensor or NumPy array (no copy where possible)."""
    if isinstance(a, torch.Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        if a.dtype == object or a.dtype.kind in "USV":
            raise ValueError(f"{what} has dtype {a.dtype}; expected numbers")
        return torch.from_numpy(np.ascontiguousarray(a))
    raise TypeError(f"{what} must be a tensor or a NumPy array, got {type(a).__name__}")


_IMAGE_SHAPES = "(N, H, W) grey or (N, H, W, 3) colour uint8 images, or (N, C, H, W) float images"


def images_to_float(a: Any, what: str) -> torch.Tensor:
    """Images as a new float32 (n, c, h, w) tensor on the [0, 1] scale (uint8 is divided by 255).

    Accepts uint8 (n, h, w), (n, h, w, c) with c in {1, 3} or (n, c, h, w) with c in {1, 3};
    float (n, h, w) or (n, c, h, w), taken as already scaled.
    """
    t = as_tensor(a, what)
    if t.dtype == torch.uint8:
        if t.dim() == 3:
            t = t.unsqueeze(1)
        elif t.dim() == 4 and t.shape[3] in (1, 3):
            t = t.permute(0, 3, 1, 2)
        elif not (t.dim() == 4 and t.shape[1] in (1, 3)):
            raise ValueError(f"{what} has shape {tuple(t.shape)}; expected {_IMAGE_SHAPES}")
        out = t.to(torch.float32).div_(255.0)
    elif t.is_floating_point():
        if t.dim() == 3:
            t = t.unsqueeze(1)
        elif t.dim() != 4:
            raise ValueError(f"{what} has shape {tuple(t.shape)}; expected {_IMAGE_SHAPES}")
        out = t.to(torch.float32, copy=True)
    else:
        raise ValueError(f"{what} has dtype {t.dtype}; expected uint8 (0..255) or float ([0, 1]) images")
    if min(out.shape[1:]) < 1:
        raise ValueError(f"{what} has shape {tuple(t.shape)}: an image dimension is 0")
    return out.contiguous()


def labels_to_long(a: Any, what: str) -> torch.Tensor:
    """Labels (n,) or (n, 1) of any integer dtype as an int64 (n,) tensor."""
    t = as_tensor(a, what)
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1:
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected (N,) integer class labels")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{what} has dtype {t.dtype}; expected integer class labels")
    return t.to(torch.int64)


def from_arrays(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any,
                classes: Optional[Sequence[Any]] = None, normalize: NormalizeArg = "auto") -> LabeledData:
    """Check, convert and normalize four arrays into a :class:`LabeledData`.

    Without ``classes`` the class names are ``"0" .. str(K-1)`` with K = 1 + the largest label.
    """
    xs, ys = {}, {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x_t = as_tensor(x, f"x_{split}")
        y_t = labels_to_long(y, f"y_{split}")
        check_lengths(x_t.shape[0] if x_t.dim() else 0, y_t.shape[0], split)
        xs[split], ys[split] = images_to_float(x_t, f"x_{split}"), y_t
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise ValueError(f"x_train images are {tuple(xs['train'].shape[1:])} but x_test images are "
                         f"{tuple(xs['test'].shape[1:])}; both splits need the same (c, h, w)")
    if classes is None:
        hi = max(int(ys["train"].max()), int(ys["test"].max()))
        classes = tuple(str(i) for i in range(max(hi, 0) + 1))
    else:
        classes = tuple(str(c) for c in classes)
    for split in ("train", "test"):
        check_label_range(ys[split], len(classes), f"y_{split}")
    mean, std = resolve_stats(name, xs["train"], normalize)
    for split in ("train", "test"):
        apply_stats(xs[split], mean, std)
    return LabeledData(name, xs["train"], ys["train"], xs["test"], ys["test"], classes, mean, std)


def from_tensors(x_train: Any, y_train: Any, x_test: Any, y_test: Any, classes: Optional[Sequence[Any]] = None,
                 name: str = "tensors", normalize: NormalizeArg = "auto") -> LabeledData:
    """In-memory tensors or arrays as a :class:`LabeledData` (the inputs are not modified).

    ``x``: uint8 (n, h, w) / (n, h, w, 3) scaled by 1/255, or float (n, h, w) / (n, c, h, w) taken as is;
    ``y``: (n,) integer labels. ``normalize``: see :data:`ftdfast.data.normalize.NormalizeArg`
    (default: known statistics for ``name``, else computed from ``x_train``).
    """
    return from_arrays(name, x_train, y_train, x_test, y_test, classes, normalize)


def stratified_split(y: Any, test_fraction: float = 0.25, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split: per class, round(count * test_fraction) samples go to the test side.

    Returns (train_idx, test_idx), each a sorted int64 tensor; classes are visited in increasing label order
    with one generator seeded with ``seed``, so the split is a function of (labels, test_fraction, seed).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    y = labels_to_long(y, "labels")
    g = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero()[:, 0]
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(math.floor(idx.numel() * test_fraction + 0.5))
        test.append(perm[:k])
        train.append(perm[k:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values
