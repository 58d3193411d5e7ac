"""Pixel-to-pixel regression tasks on real images (MSE loss).

Targets are functions of the model's (normalized) input image x (n, c, h, w):

- ``autoencode``: y = x;
- ``grey``: y = 0.299 r + 0.587 g + 0.114 b (n, 1, h, w) for colour, y = x for grey data;
- ``edges``: Sobel gradient magnitude of the grey image, sqrt(gx^2 + gy^2) (n, 1, h, w), with
  replicated borders (so a constant image has no edges anywhere);
- ``blur``: 5x5 Gaussian blur, sigma 1 (weights sum to 1), per channel, replicated borders;
- ``denoise``: input x + 0.3 * N(0, 1) noise (seeded), target the clean x.

Samples come in a seeded random order, as for classification tasks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F

from ..data.labeled import LabeledData
from .taskdata import TaskData

TARGETS = ("autoencode", "edges", "grey", "blur", "denoise")
NOISE_STD = 0.3
_CHUNK = 4096


def grey(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w): x itself for one channel, ITU-R 601 luma for three, the channel mean otherwise."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i:i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of ``grey(x)``: (n, 1, h, w)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    k = torch.stack([kx, kx.t()]).unsqueeze(1)                                # (2, 1, 3, 3)

    def one(b: torch.Tensor) -> torch.Tensor:
        gxy = F.conv2d(F.pad(grey(b), (1, 1, 1, 1), mode="replicate"), k)    # (n, 2, h, w)
        return gxy.square().sum(dim=1, keepdim=True).sqrt()
    return _chunked(one, x)


def gaussian_blur(x: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Per-channel Gaussian blur of x (n, c, h, w), replicated borders; same shape."""
    r = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g1 = torch.exp(-r.square() / (2 * sigma ** 2))
    k2 = torch.outer(g1, g1)
    k2 = (k2 / k2.sum()).expand(x.shape[1], 1, size, size)                   # (c, 1, size, size)
    p = size // 2

    def one(b: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(b, (p, p, p, p), mode="replicate"), k2, groups=b.shape[1])
    return _chunked(one, x)


@dataclass(frozen=True)
class RegressionTask:
    """A pixel-to-pixel task: ``target`` is one of :data:`TARGETS` (see the module docstring)."""

    name: str
    target: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task needs a non-empty name, got {self.name!r}")
        if self.target not in TARGETS:
            raise ValueError(f"task {self.name!r}: target={self.target!r} is not one of {TARGETS}")

    kind = "regression"
    num_classes = None

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": "regression", "name": self.name, "target": self.target}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RegressionTask":
        if d.get("kind") != "regression":
            raise ValueError(f"not a regression task: kind={d.get('kind')!r}")
        return cls(d["name"], d["target"])

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def build(self, data: LabeledData, seed: int = 0) -> TaskData:
        """Inputs and float32 targets (n, c', h, w) from both splits of ``data``; loss "mse"."""
        g = torch.Generator().manual_seed(int(seed))
        out = []
        for x in (data.x_train, data.x_test):
            x = x[torch.randperm(x.shape[0], generator=g)]
            if self.target == "autoencode":
                out += [x, x]
            elif self.target == "grey":
                out += [x, grey(x)]
            elif self.target == "edges":
                out += [x, sobel_magnitude(x)]
            elif self.target == "blur":
                out += [x, gaussian_blur(x)]
            else:  # denoise
                noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
                out += [x + NOISE_STD * noise.to(x.device), x]
        return TaskData(self, *out, num_classes=None, loss="mse", source=data.name)


def image_tasks(data: LabeledData) -> List[RegressionTask]:
    """The five regression tasks, named ``f"{data.name}:{target}"``."""
    return [RegressionTask(f"{data.name}:{t}", t) for t in TARGETS]
