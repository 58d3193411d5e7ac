"""ResNet-18, CIFAR style (He et al. 2016): 3x3 stride-1 stem, no max-pool, four stages of two basic blocks."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model, scaled


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is ``downsample`` (1x1 conv + bn)
    when the stride or the channel count changes, else the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)), ("bn", nn.BatchNorm2d(c_out))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """conv1 - bn1 - relu - layer1..layer4 (strides 1, 2, 2, 2) - avgpool (adaptive 1x1) - fc.

    A stride-2 3x3 convolution with padding 1 maps 1x1 to 1x1, so any input size works.
    """

    def __init__(self, blocks, *, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        c = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        for i, (n, base) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
            out = scaled(base, width)
            stride = 1 if i == 1 else 2
            layer = []
            for b in range(n):
                layer.append(BasicBlock(c, out, stride if b == 0 else 1))
                c = out
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c, h, w) -> logits (n, k)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("resnet18")
def resnet18(*, in_channels: int, num_classes: int, input_size: int, width: float = 1.0) -> nn.Module:
    """ResNet-18 for small images (11.17M parameters for k = 10); ``input_size`` is not needed."""
    return ResNet((2, 2, 2, 2), in_channels=in_channels, num_classes=num_classes, width=width)
