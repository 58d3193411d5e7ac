"""VGG-16 with BatchNorm, CIFAR style (Simonyan & Zisserman 2015; the 13-conv "D" configuration)."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from .registry import num_halvings, register_model, scaled

#: Channels of the five stages (2, 2, 3, 3, 3 convs); a 2x2 max-pool ends each stage.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG(nn.Module):
    """``features`` (conv{stage}_{i} - bn{stage}_{i} - relu{stage}_{i}, pool{stage}) - ``avgpool`` (adaptive, 1x1)
    - ``classifier`` (Linear(512 -> k)).

    Inputs smaller than 32 get fewer poolings (the last stages keep their size): a map
    is never pooled below 1x1, so 28x28 pools 4 times (28-14-7-3-1) and 8x8 three times.
    """

    def __init__(self, stages, *, in_channels: int, num_classes: int, input_size: int, width: float = 1.0):
        super().__init__()
        pools = num_halvings(input_size, len(stages))
        layers, c = [], in_channels
        for s, stage in enumerate(stages, start=1):
            for i, out in enumerate(stage, start=1):
                out = scaled(out, width)
                layers += [(f"conv{s}_{i}", nn.Conv2d(c, out, 3, padding=1)), (f"bn{s}_{i}", nn.BatchNorm2d(out)),
                           (f"relu{s}_{i}", nn.ReLU())]
                c = out
            if s <= pools:
                layers.append((f"pool{s}", nn.MaxPool2d(2)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c, h, w) -> logits (n, k)."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("vgg16")
def vgg16(*, in_channels: int, num_classes: int, input_size: int, width: float = 1.0) -> nn.Module:
    """VGG-16-BN for small images: 13 3x3 convs with BatchNorm, 512 -> k head (14.73M parameters for k = 10)."""
    return VGG(VGG16_STAGES, in_channels=in_channels, num_classes=num_classes, input_size=input_size, width=width)
