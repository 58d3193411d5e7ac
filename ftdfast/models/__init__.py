"""Networks for task distances: ``build_model(arch, *, in_channels, num_classes, input_size, **options)``.

Architectures (:data:`ARCHS`): ``small_cnn`` and ``lenet`` (CPU-friendly), ``vgg16``, ``resnet18`` and
``densenet121`` (the paper's networks, CIFAR style: 3x3 stride-1 stems, BatchNorm, adaptive average
pooling before the head; ``width=`` scales their channels) and ``autoencoder`` (pixel-to-pixel, output
``(n, num_classes, h, w)``).  Add one with the :func:`register_model` decorator.
"""
from . import small, vgg, resnet, densenet, autoencoder  # noqa: F401, I001  (registers them; this order is ARCHS)
from .autoencoder import AutoEncoder
from .densenet import DenseNet
from .registry import ARCHS, build_model, register_model
from .resnet import ResNet
from .vgg import VGG

__all__ = ["ARCHS", "build_model", "register_model", "VGG", "ResNet", "DenseNet", "AutoEncoder"]
