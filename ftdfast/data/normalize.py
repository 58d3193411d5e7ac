"""Per-channel normalization: known statistics for the standard datasets, else computed.

Images are first scaled to [0, 1] (uint8 / 255, scikit-learn digits / 16); the tables
below are the per-channel mean and standard deviation of the training images on
that scale. Normalized images are ``(x - mean[c]) / std[c]``.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import torch

Stats = Tuple[Tuple[float, ...], Tuple[float, ...]]

#: name -> (mean per channel, std per channel) on the [0, 1] pixel scale.
KNOWN_STATS: Dict[str, Stats] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "digits": ((0.3053,), (0.3760,)),
}

_ALIASES = {
    "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100",
}

#: What ``normalize=`` accepts: "auto" (the known table for the dataset's name, else
#: computed), "compute" (always computed from the training set), None or False (no
#: normalization: mean 0, std 1), or an explicit ``(mean, std)`` pair of per-channel sequences.
NormalizeArg = Union[str, None, bool, Tuple]


def canonical_name(name: str) -> str:
    """Lower-case dataset name with the usual spellings merged (``"CIFAR-10"`` -> ``"cifar10"``)."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> Stats:
    """Population mean and std per channel of ``x`` (n, c, h, w), summed in float64 in chunks.

    A channel with zero spread gets std 1.0 (normalization then only centres it).
    """
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"channel_stats needs a non-empty (n, c, h, w) tensor, got shape {tuple(x.shape)}")
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    ss = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        b = x[i:i + chunk].detach().to("cpu", torch.float64)
        s += b.sum(dim=(0, 2, 3))
        ss += b.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / count
    var = (ss / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def resolve_stats(name: str, x_train: torch.Tensor, normalize: NormalizeArg = "auto") -> Stats:
    """The (mean, std) pair, each of length c, to normalize ``x_train`` (n, c, h, w) with."""
    c = x_train.shape[1]
    if normalize is None or normalize is False:
        return (0.0,) * c, (1.0,) * c
    if isinstance(normalize, str):
        if normalize == "auto":
            known = KNOWN_STATS.get(canonical_name(name))
            if known is not None and len(known[0]) == c:
                return known
            return channel_stats(x_train)
        if normalize == "compute":
            return channel_stats(x_train)
        raise ValueError(f"normalize={normalize!r} is not one of 'auto', 'compute', None or a (mean, std) pair")
    try:
        mean, std = (tuple(float(v) for v in part) for part in normalize)
    except (TypeError, ValueError) as e:
        raise ValueError(f"normalize must be 'auto', 'compute', None or a (mean, std) pair of per-channel "
                         f"sequences, got {normalize!r}") from e
    if len(mean) != c or len(std) != c:
        raise ValueError(f"normalize=(mean, std) needs {c} values each (one per channel), "
                         f"got {len(mean)} and {len(std)}")
    if any(not v > 0 for v in std):
        raise ValueError(f"normalize std values must be > 0, got {std}")
    return mean, std


def apply_stats(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean[c]) / std[c]`` in place on ``x`` (n, c, h, w); returns ``x``."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """The inverse of :func:`apply_stats`, out of place: ``x * std[c] + mean[c]``."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m
