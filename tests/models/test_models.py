"""ftdfast.models: every architecture builds, runs forward and backward on awkward sizes, and has the
standard parameter counts."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from ftdfast.models import ARCHS, build_model, register_model
from ftdfast.models.registry import num_halvings

BIG = ("vgg16", "resnet18", "densenet121")
CLASSIFIERS = ("small_cnn", "lenet") + BIG


def small(arch):
    """Options that keep the big networks cheap on a CPU (an eighth of the channels)."""
    return {"width": 0.125} if arch in BIG + ("autoencoder",) else {}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_archs_lists_every_builtin_architecture():
    assert ARCHS[:6] == ["small_cnn", "lenet", "vgg16", "resnet18", "densenet121", "autoencoder"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [8, 28, 32, 9])
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_and_backward(arch, size, channels):
    k = 5
    model = build_model(arch, in_channels=channels, num_classes=k, input_size=size, **small(arch))
    x = torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(size))
    out = model(x)
    want = (3, k, size, size) if arch == "autoencoder" else (3, k)
    assert tuple(out.shape) == want
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_non_square_inputs(arch):
    model = build_model(arch, in_channels=2, num_classes=3, input_size=8, **small(arch)).eval()
    out = model(torch.randn(2, 2, 8, 11))
    assert tuple(out.shape) == ((2, 3, 8, 11) if arch == "autoencoder" else (2, 3))


def test_build_args_rebuild_the_same_network():
    torch.manual_seed(0)
    a = build_model("resnet18", in_channels=3, num_classes=4, input_size=32, width=0.125)
    assert a.build_args == dict(arch="resnet18", in_channels=3, num_classes=4, input_size=32, width=0.125)
    b = build_model(**a.build_args)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------------- parameter counts
def conv(c_in, c_out, k, bias):
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c):
    return 2 * c


def test_vgg16_has_13_batchnormed_convs_and_the_standard_count():
    model = build_model("vgg16", in_channels=3, num_classes=10, input_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(m.kernel_size == (3, 3) for m in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    want = sum(conv(c_in, c_out, 3, True) + bn(c_out) for c_in, c_out in zip([3] + widths[:-1], widths))
    want += 512 * 10 + 10
    assert n_params(model) == want  # 14,728,266
    tv = pytest.importorskip("torchvision")
    features = tv.models.vgg.make_layers(tv.models.vgg.cfgs["D"], batch_norm=True)  # without the 4096-wide head
    assert n_params(model) == n_params(features) + 512 * 10 + 10


def test_resnet18_count_is_the_cifar_resnet18():
    model = build_model("resnet18", in_channels=3, num_classes=10, input_size=32)
    want = conv(3, 64, 3, False) + bn(64)
    c = 64
    for out in (64, 128, 256, 512):
        for b in range(2):
            want += conv(c, out, 3, False) + bn(out) + conv(out, out, 3, False) + bn(out)
            if c != out:
                want += conv(c, out, 1, False) + bn(out)
            c = out
    want += 512 * 10 + 10
    assert n_params(model) == want
    assert abs(want - 11.17e6) < 0.01e6
    tv = pytest.importorskip("torchvision")
    # torchvision's ImageNet stem is a 7x7 conv; ours is 3x3
    assert n_params(model) == n_params(tv.models.resnet18(num_classes=10)) - conv(3, 64, 7, False) \
        + conv(3, 64, 3, False)


def test_densenet121_structure_and_count():
    model = build_model("densenet121", in_channels=3, num_classes=10, input_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 121  # 120 convolutions and the classifier
    g, want, c = 32, conv(3, 64, 3, False), 64
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            want += bn(c) + conv(c, 4 * g, 1, False) + bn(4 * g) + conv(4 * g, g, 3, False)
            c += g
        if i < 3:
            want += bn(c) + conv(c, c // 2, 1, False)
            c //= 2
    want += bn(c) + c * 10 + 10
    assert c == 1024
    assert n_params(model) == want
    tv = pytest.importorskip("torchvision")
    # torchvision: 7x7 stem followed by norm0; ours: 3x3 stem straight into the first dense block
    assert n_params(model) == n_params(tv.models.densenet121(num_classes=10)) - conv(3, 64, 7, False) - bn(64) \
        + conv(3, 64, 3, False)


@pytest.mark.parametrize("size,pools", [(8, 3), (9, 3), (28, 4), (32, 5), (64, 5), (2, 1)])
def test_vgg_pools_never_below_one_pixel(size, pools):
    model = build_model("vgg16", in_channels=1, num_classes=2, input_size=size, width=0.0625)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools == num_halvings(size, 5)
    feats = model.features(torch.randn(2, 1, size, size))
    assert feats.shape[-1] >= 1 and (size < 32 or feats.shape[-1] == size // 32)


def test_width_scales_channels():
    model = build_model("vgg16", in_channels=3, num_classes=10, input_size=32, width=0.25)
    assert model.features.conv1_1.out_channels == 16 and model.classifier.in_features == 128
    dn = build_model("densenet121", in_channels=3, num_classes=10, input_size=32, width=0.25)
    assert dn.features.denseblock1.denselayer1.conv2.out_channels == 8


# ------------------------------------------------------------------------------------- small networks
@pytest.mark.parametrize("size", [8, 28, 32])
def test_small_cnn_has_the_same_parameters_at_every_size(size):
    model = build_model("small_cnn", in_channels=1, num_classes=10, input_size=size)
    assert [n for n, _ in model.named_parameters()] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                       "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert model.fc1.in_features == 512


@pytest.mark.parametrize("size,fc1_in", [(28, 400), (32, 400), (8, 64)])
def test_lenet_feature_sizes(size, fc1_in):
    model = build_model("lenet", in_channels=1, num_classes=10, input_size=size)
    assert model.fc1.in_features == fc1_in and model.fc2.out_features == 84 and model.fc1.out_features == 120


@pytest.mark.parametrize("size", [7, 8, 9, 28, 31, 32])
def test_autoencoder_output_matches_the_input_grid(size):
    model = build_model("autoencoder", in_channels=3, num_classes=1, input_size=size, width=0.25)
    assert tuple(model(torch.randn(2, 3, size, size)).shape) == (2, 1, size, size)


# ------------------------------------------------------------------------------------- registry and errors
def test_unknown_arch_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown architecture 'vgg19'.*small_cnn.*densenet121"):
        build_model("vgg19", in_channels=3, num_classes=10, input_size=32)


@pytest.mark.parametrize("kw,match", [
    (dict(in_channels=0), "in_channels must be a positive int"),
    (dict(num_classes=2.5), "num_classes must be a positive int"),
    (dict(input_size=True), "input_size must be a positive int"),
    (dict(width=0), "width must be a positive finite number"),
    (dict(width=float("nan")), "width must be a positive finite number"),
])
def test_bad_arguments(kw, match):
    args = dict(in_channels=1, num_classes=3, input_size=8) | kw
    with pytest.raises(ValueError, match=match):
        build_model("resnet18", **args)


def test_too_small_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="lenet needs input_size >= 4"):
        build_model("lenet", in_channels=1, num_classes=3, input_size=3)


def test_register_model_adds_an_architecture():
    name = "test_only_linear"

    @register_model(name)
    def linear(*, in_channels, num_classes, input_size):
        return nn.Sequential(OrderedDict([("flatten", nn.Flatten()),
                                          ("fc", nn.Linear(in_channels * input_size ** 2, num_classes))]))

    try:
        assert name in ARCHS
        model = build_model(name, in_channels=2, num_classes=3, input_size=5)
        assert tuple(model(torch.randn(4, 2, 5, 5)).shape) == (4, 3)
        register_model(name)(linear)  # registering again replaces, without a duplicate name
        assert ARCHS.count(name) == 1
    finally:
        from ftdfast.models import registry
        ARCHS.remove(name)
        registry._FACTORIES.pop(name)
