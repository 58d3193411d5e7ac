"""DenseNet-121, CIFAR style (Huang et al. 2017, DenseNet-BC): growth 32, blocks 6-12-24-16, bottleneck 4x,
compression 0.5, a 3x3 stride-1 stem with 2 x growth channels and no max-pool."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model, scaled


class DenseLayer(nn.Module):
    """norm1 - relu - conv1 (1x1, bn_size x growth) - norm2 - relu - conv2 (3x3, growth); output is
    the input with the ``growth`` new channels appended."""

    def __init__(self, c_in: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, new], 1)


class Transition(nn.Sequential):
    """norm - relu - conv (1x1, compression) - pool (2x2 average; left out when the map is already 1x1)."""

    def __init__(self, c_in: int, c_out: int, pool: bool):
        layers = [("norm", nn.BatchNorm2d(c_in)), ("relu", nn.ReLU()), ("conv", nn.Conv2d(c_in, c_out, 1, bias=False))]
        if pool:
            layers.append(("pool", nn.AvgPool2d(2)))
        super().__init__(OrderedDict(layers))


class DenseNet(nn.Module):
    """``features`` (conv0, denseblock1, transition1, ..., denseblock4, norm5) - relu - avgpool (adaptive 1x1)
    - ``classifier``; torchvision's layer names."""

    def __init__(self, blocks, *, in_channels: int, num_classes: int, input_size: int, growth: int = 32,
                 bn_size: int = 4, compression: float = 0.5, width: float = 1.0):
        super().__init__()
        growth = scaled(growth, width)
        c = 2 * growth
        layers = [("conv0", nn.Conv2d(in_channels, c, 3, padding=1, bias=False))]
        size = input_size
        for i, n in enumerate(blocks, start=1):
            block = nn.Sequential(OrderedDict(
                (f"denselayer{j}", DenseLayer(c + (j - 1) * growth, growth, bn_size)) for j in range(1, n + 1)))
            layers.append((f"denseblock{i}", block))
            c += n * growth
            if i < len(blocks):
                out = int(c * compression)
                layers.append((f"transition{i}", Transition(c, out, pool=size >= 2)))
                size //= 2 if size >= 2 else 1
                c = out
        layers.append(("norm5", nn.BatchNorm2d(c)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c, h, w) -> logits (n, k)."""
        x = F.relu(self.features(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


@register_model("densenet121")
def densenet121(*, in_channels: int, num_classes: int, input_size: int, width: float = 1.0) -> nn.Module:
    """DenseNet-121 for small images (6.96M parameters for k = 10); ``width`` scales the growth rate."""
    return DenseNet((6, 12, 24, 16), in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                    width=width)
