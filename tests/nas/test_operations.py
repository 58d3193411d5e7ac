"""The ten operations: shapes at stride 1 and 2 on odd sizes, ReLU-conv-BN order, parameter counts, errors."""
import math

import pytest
import torch
import torch.nn as nn

from ftdfast.nas import ALL_OPS, OPS, make_op
from ftdfast.nas.operations import FactorizedReduce

CONV_OPS = {  # name -> (kernel area summed over its convolutions, dilation)
    "conv_3x3": (9, 1), "conv_5x5": (25, 1), "conv_7x7": (49, 1),
    "dil_conv_3x3": (9, 2), "dil_conv_5x5": (25, 2), "conv_7x1_1x7": (14, 1),
}


def test_registry_lists_the_ten_operations_in_order():
    assert list(OPS) == list(ALL_OPS)
    assert len(ALL_OPS) == 10


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("hw", [(7, 7), (9, 5), (1, 1)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_shape_at_stride(name, stride, hw):
    C, (h, w) = 5, hw
    op = make_op(name, C, stride).train()
    x = torch.randn(2 if hw == (1, 1) else 1, C, h, w)    # BatchNorm in training mode needs 2+ values
    y = op(x)
    expect = (x.shape[0], C, math.ceil(h / stride), math.ceil(w / stride))
    assert tuple(y.shape) == expect


@pytest.mark.parametrize("name", sorted(set(ALL_OPS) - {"zero", "identity", "max_pool_3x3", "avg_pool_3x3"}))
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_ops_run_relu_then_conv_then_batchnorm(name, stride):
    op = make_op(name, 4, stride)
    order = []
    for m in op.modules():
        if m is not op and not list(m.children()):
            m.register_forward_hook(lambda mod, inp, out: order.append(type(mod).__name__))
    op(torch.randn(1, 4, 9, 9))
    convs = ["Conv2d", "Conv2d"] if name == "conv_7x1_1x7" else ["Conv2d"]
    assert order == ["ReLU"] + convs + ["BatchNorm2d"]


@pytest.mark.parametrize("name", sorted(CONV_OPS))
def test_conv_op_parameters_and_dilation(name):
    C = 6
    area, dilation = CONV_OPS[name]
    op = make_op(name, C, 1)
    assert sum(p.numel() for p in op.parameters()) == area * C * C + 2 * C
    assert all(m.dilation == (dilation, dilation) and m.bias is None for m in op.modules() if isinstance(m, nn.Conv2d))
    no_affine = make_op(name, C, 1, affine=False)
    assert sum(p.numel() for p in no_affine.parameters()) == area * C * C


def test_identity_and_zero():
    x = torch.randn(1, 3, 7, 7)
    assert make_op("identity", 3, 1)(x) is x
    assert torch.equal(make_op("zero", 3, 1)(x), torch.zeros_like(x))
    assert torch.equal(make_op("zero", 3, 2)(x), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("C", [4, 5])
def test_identity_at_stride_2_is_a_factorized_reduce(C):
    op = make_op("identity", C, 2)
    assert isinstance(op, FactorizedReduce)
    # two 1x1 convs C -> C//2 and C -> C - C//2, and BatchNorm(C)
    assert sum(p.numel() for p in op.parameters()) == C * (C // 2) + C * (C - C // 2) + 2 * C
    order = []
    for m in (op.relu, op.conv_1, op.conv_2, op.bn):
        m.register_forward_hook(lambda mod, inp, out: order.append(type(mod).__name__))
    assert op(torch.randn(1, C, 9, 7)).shape == (1, C, 5, 4)
    assert order == ["ReLU", "Conv2d", "Conv2d", "BatchNorm2d"]


def test_factorized_reduce_reads_even_and_odd_positions():
    op = FactorizedReduce(1, 2, affine=False).eval()
    with torch.no_grad():
        op.conv_1.weight.fill_(1.0)
        op.conv_2.weight.fill_(1.0)
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)       # positive: the ReLU keeps it
    y = op(x) * math.sqrt(1 + op.bn.eps)               # undo the fresh BatchNorm (mean 0, var 1)
    assert torch.allclose(y[0, 0], torch.tensor([[1.0, 3.0], [7.0, 9.0]]))
    assert torch.allclose(y[0, 1], torch.tensor([[5.0, 0.0], [0.0, 0.0]]))


def test_pools_have_no_parameters_and_average_ignores_padding():
    assert not list(make_op("max_pool_3x3", 3, 2).parameters())
    avg = make_op("avg_pool_3x3", 1, 1)
    assert torch.allclose(avg(torch.ones(1, 1, 5, 5)), torch.ones(1, 1, 5, 5))


def test_unknown_operation_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown operation 'sep_conv_3x3'.*valid operations are: zero, identity"):
        make_op("sep_conv_3x3", 4, 1)
    with pytest.raises(ValueError, match="valid operations are"):
        OPS["conv_9x9"]


def test_bad_stride():
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        make_op("conv_3x3", 4, 3)
