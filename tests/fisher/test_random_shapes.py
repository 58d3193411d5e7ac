"""Random layer configurations (hypothesis) against the per-sample loop, float64."""
import pytest
import torch
import torch.nn as nn

import ftdfast

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


class Net(nn.Module):
    def __init__(self, layer, classes=3):
        super().__init__()
        self.layer = layer
        self.head = nn.LazyLinear(classes)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(x)).flatten(1))


def check(layer, x, classes=3):
    torch.manual_seed(0)
    model = Net(layer, classes).double()
    x = x.double()
    with torch.no_grad():
        model(x)  # materialize the lazy head
    model.eval()
    y = torch.randint(0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(1))
    got = ftdfast.fisher_diagonal(model, (x, y), batch_size=3, progress=False)
    want = ftdfast.fisher_diagonal(model, (x, y), backend="loop", progress=False)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-14)


@SETTINGS
@given(n=st.integers(1, 5), c_per_group=st.integers(1, 3), o_per_group=st.integers(1, 3), groups=st.integers(1, 2),
       k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2), dilation=st.integers(1, 2),
       h=st.integers(5, 9), w=st.integers(5, 8), bias=st.booleans())
def test_conv2d(n, c_per_group, o_per_group, groups, k, stride, padding, dilation, h, w, bias):
    layer = nn.Conv2d(c_per_group * groups, o_per_group * groups, k, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, bias=bias)
    check(layer, torch.randn(n, c_per_group * groups, h, w))


@SETTINGS
@given(n=st.integers(1, 5), lead=st.lists(st.integers(1, 4), min_size=0, max_size=2), i=st.integers(1, 6),
       o=st.integers(1, 6), bias=st.booleans())
def test_linear_any_rank(n, lead, i, o, bias):
    check(nn.Linear(i, o, bias=bias), torch.randn(n, *lead, i))


@SETTINGS
@given(n=st.integers(1, 4), c=st.integers(1, 3), o=st.integers(1, 3), k=st.integers(1, 3), stride=st.integers(1, 3),
       padding=st.integers(0, 1), out_pad=st.integers(0, 1), length=st.integers(2, 6))
def test_conv_transpose1d(n, c, o, k, stride, padding, out_pad, length):
    out_pad = min(out_pad, stride - 1)
    check(nn.ConvTranspose1d(c, o, k, stride=stride, padding=padding, output_padding=out_pad),
          torch.randn(n, c, length))
