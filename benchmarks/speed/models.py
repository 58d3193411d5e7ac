"""The five benchmark models and their (random, seeded) data.

Each :class:`Bench` is a named factory: ``build()`` returns ``(model.eval(), X, y)``
with the batch the benchmarks time (N samples, float32). Everything is seeded, so
two calls give the same weights and data. Real data is not needed (nor used).

=============  ==================  =====  ==========================================
id             input               N      model
=============  ==================  =====  ==========================================
mlp            (N, 784)            256    784-512-256-10, ReLU
lenet          (N, 1, 28, 28)      256    LeNet-5 (conv6 5x5 pad 2, pool, conv16 5x5,
                                          pool, fc 120-84-10, ReLU)
vgg            (N, 3, 32, 32)      128    conv3x3 3-64-128-256 + ReLU + maxpool, fc 4096-10
resnet18       (N, 3, 32, 32)      64     CIFAR ResNet-18 (BasicBlock, BatchNorm in eval
                                          mode with non-trivial running stats, in-place ReLU)
transformer    (N, 64, 256) float  32     4 x TransformerEncoderLayer(d=256, 4 heads,
                                          ff 1024, dropout 0), mean-pool, Linear 10
=============  ==================  =====  ==========================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

SEED = 0
NUM_CLASSES = 10


# ---------------------------------------------------------------- models
def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, NUM_CLASSES))


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),   # 6x28x28 -> 6x14x14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),             # 16x10x10 -> 16x5x5
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, NUM_CLASSES))


def vgg_small() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 64x16x16
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 128x8x8
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 256x4x4
        nn.Flatten(),
        nn.Linear(256 * 4 * 4, NUM_CLASSES))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one in-place ReLU module used twice, ``out += identity``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem conv (stride 1), no max-pool, stages 64-128-256-512."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TransformerClassifier(nn.Module):
    """4 post-norm encoder layers on (N, T, d) float features, mean over T, then a Linear head."""

    def __init__(self, d: int = 256, heads: int = 4, ff: int = 1024, layers: int = 4,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


def _randomize_bn_stats(model: nn.Module, g: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, as a trained network would have."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.empty(m.running_var.shape).uniform_(0.5, 2.0, generator=g))
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def resnet18() -> nn.Module:
    model = ResNet18()
    _randomize_bn_stats(model, torch.Generator().manual_seed(SEED + 7))
    return model


# ------------------------------------------------------------- factories
@dataclass(frozen=True)
class Bench:
    """A benchmark problem: ``build()`` -> ``(model.eval(), X, y)``, float32, seeded."""

    id: str
    make: Callable[[], nn.Module]
    n: int
    input_shape: Tuple[int, ...]
    description: str

    def build(self, seed: int = SEED):
        torch.manual_seed(seed)
        model = self.make().float().eval()
        g = torch.Generator().manual_seed(seed + 1)
        x = torch.randn((self.n,) + tuple(self.input_shape), generator=g)
        y = torch.randint(0, NUM_CLASSES, (self.n,), generator=g)
        return model, x, y


BENCHES: Dict[str, Bench] = {b.id: b for b in (
    Bench("mlp", mlp, 256, (784,), "MLP 784-512-256-10"),
    Bench("lenet", lenet5, 256, (1, 28, 28), "LeNet-5, 1x28x28"),
    Bench("vgg", vgg_small, 128, (3, 32, 32), "VGG-style CNN 64-128-256, 3x32x32"),
    Bench("resnet18", resnet18, 64, (3, 32, 32), "ResNet-18 (CIFAR), BatchNorm eval, in-place ReLU"),
    Bench("transformer", TransformerClassifier, 32, (64, 256), "4-layer TransformerEncoder d=256 T=64"),
)}

MODEL_IDS = tuple(BENCHES)


def get(model_id: str) -> Bench:
    try:
        return BENCHES[model_id]
    except KeyError:
        raise KeyError(f"unknown benchmark model {model_id!r}; choose from {', '.join(MODEL_IDS)}") from None
