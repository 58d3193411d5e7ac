"""A convolutional encoder-decoder for pixel-to-pixel tasks (MSE): output (n, k, h, w) for input (n, c, h, w)."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model, scaled


class AutoEncoder(nn.Module):
    """encoder: conv1 (3x3) - conv2 (3x3, stride 2) - conv3 (3x3, stride 2), each with bn and relu;
    decoder: deconv1, deconv2 (4x4 transposed, stride 2), each with bn and relu; head: 3x3 conv to k channels
    (linear output).

    The decoder's map is at least the input's size (ceil-halving twice, then doubling twice);
    the output is cropped to the input's ``h x w`` (odd sizes, e.g. 7 -> 4 -> 2 -> 8 -> crop 7).
    """

    def __init__(self, *, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        c1, c2 = scaled(32, width), scaled(64, width)

        def block(name: str, conv: nn.Module, c: int):
            return [(f"{name}", conv), (f"bn{name[-1]}", nn.BatchNorm2d(c)), (f"relu{name[-1]}", nn.ReLU())]

        self.encoder = nn.Sequential(OrderedDict(
            block("conv1", nn.Conv2d(in_channels, c1, 3, padding=1), c1)
            + block("conv2", nn.Conv2d(c1, c2, 3, stride=2, padding=1), c2)
            + block("conv3", nn.Conv2d(c2, c2, 3, stride=2, padding=1), c2)))
        self.decoder = nn.Sequential(OrderedDict(
            block("deconv1", nn.ConvTranspose2d(c2, c2, 4, stride=2, padding=1), c2)
            + block("deconv2", nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), c1)))
        self.head = nn.Conv2d(c1, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c, h, w) -> (n, k, h, w)."""
        h, w = x.shape[-2:]
        y = self.head(self.decoder(self.encoder(x)))
        if y.shape[-2] < h or y.shape[-1] < w:  # cannot happen with these strides; kept as a guard
            y = F.interpolate(y, size=(max(h, y.shape[-2]), max(w, y.shape[-1])), mode="bilinear",
                              align_corners=False)
        return y[..., :h, :w]


@register_model("autoencoder")
def autoencoder(*, in_channels: int, num_classes: int, input_size: int, width: float = 1.0) -> nn.Module:
    """Encoder-decoder with ``num_classes`` output channels and the input's spatial size."""
    return AutoEncoder(in_channels=in_channels, num_classes=num_classes, width=width)
