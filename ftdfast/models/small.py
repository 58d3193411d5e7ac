"""CPU-friendly networks: ``small_cnn`` and ``lenet`` (LeNet-5)."""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from .registry import register_model


@register_model("small_cnn")
def small_cnn(*, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """conv1(16, 3x3) - ReLU - [max-pool if input_size >= 16] - conv2(32, 3x3) - ReLU - max-pool
    - adaptive average pool to 4x4 - fc1(512 -> 64) - ReLU - fc2(64 -> k).

    On 8x8 digits the adaptive pool is the identity.  For 28x28 / 32x32 inputs the extra pool after conv1 keeps
    conv2 cheap (MNIST: 14x14 maps); parameter names are the same for every size.
    """
    if input_size < 2:
        raise ValueError(f"small_cnn needs input_size >= 2 (it max-pools once), got {input_size}")
    layers = [("conv1", nn.Conv2d(in_channels, 16, 3, padding=1)), ("relu1", nn.ReLU())]
    if input_size >= 16:
        layers.append(("pool1", nn.MaxPool2d(2)))
    layers += [("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
               ("avgpool", nn.AdaptiveAvgPool2d(4)), ("flatten", nn.Flatten()),
               ("fc1", nn.Linear(32 * 4 * 4, 64)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(64, num_classes))]
    return nn.Sequential(OrderedDict(layers))


def _conv_out(size: int, kernel: int, padding: int) -> int:
    return size + 2 * padding - kernel + 1


@register_model("lenet")
def lenet(*, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """LeNet-5: conv1(6, 5x5) - ReLU - max-pool - conv2(16, 5x5) - ReLU - max-pool - fc1(120) - fc2(84) - fc3(k).

    Padding follows the input: 32x32 uses none (the original), smaller inputs pad conv1
    by 2 (28x28 MNIST then meets the classic 5x5x16 = 400 features) and conv2 by 2
    when its input is under 10x10 (8x8 digits: 16 x 2 x 2).  Maps larger than 5x5 are
    average-pooled to 5x5 before fc1, so fc1 has at most 400 inputs.
    """
    if input_size < 4:
        raise ValueError(f"lenet needs input_size >= 4, got {input_size}")
    p1 = 0 if input_size >= 32 else 2
    s = _conv_out(input_size, 5, p1) // 2
    p2 = 0 if s >= 10 else 2
    s = _conv_out(s, 5, p2) // 2
    k = min(s, 5)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 6, 5, padding=p1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5, padding=p2)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("avgpool", nn.AdaptiveAvgPool2d(k)), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * k * k, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, num_classes))]))
