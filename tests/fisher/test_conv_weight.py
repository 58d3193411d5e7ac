"""Each convolution method, forced, against the per-sample loop; and the per-shape choice."""
import pytest
import torch

import ftdfast
from ftdfast.fisher import conv_weight
from ftdfast.fisher.conv_weight import ConvWeight

from .problems import BY_ID

CONV_PROBLEMS = ["conv1d-stride2-dil2-groups", "conv2d-basic-odd", "conv2d-stride-pad-dil-groups",
                 "conv2d-nobias-same-reflect", "conv3d", "convtranspose2d-stride-outpad-groups",
                 "convtranspose1d", "mse-regression"]


@pytest.mark.parametrize("method", sorted(conv_weight.METHODS))
@pytest.mark.parametrize("pid", CONV_PROBLEMS)
@pytest.mark.parametrize("backend", ["rules", "auto"])
def test_forced_method_matches_loop(pid, method, backend, monkeypatch):
    problem = BY_ID[pid]
    model, x, y = problem.build(torch.float64)
    want = ftdfast.fisher_diagonal(model, (x, y), loss=problem.loss, backend="loop", progress=False)
    monkeypatch.setenv("FTDFAST_CONV_METHOD", method)
    got = ftdfast.fisher_diagonal(model, (x, y), loss=problem.loss, backend=backend, progress=False)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-14)


def _factor(n=5, groups=1, transposed=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, 6, 5, generator=g, dtype=torch.float64)
    if transposed:
        w_shape = (4, 3 // 1, 3, 3)
        gy = torch.randn(n, 3, 8, 7, generator=g, dtype=torch.float64)
    else:
        w_shape = (6, 4 // groups, 3, 3)
        gy = torch.randn(n, 6, 4, 3, generator=g, dtype=torch.float64)
    return ConvWeight(x, gy, w_shape, [1, 1], [0, 0], [1, 1], groups, transposed, [0, 0])


@pytest.mark.parametrize("dims,kernel,stride,padding,dilation", [
    (1, (3,), (2,), (1,), (2,)), (2, (3, 2), (2, 1), (1, 0), (1, 2)), (3, (2, 1, 3), (1, 2, 1), (0, 1, 1), (2, 1, 1))])
def test_patches_match_unfold_and_conv(dims, kernel, stride, padding, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((3, 2) + (7, 6, 5)[:dims], generator=g, dtype=torch.float64)
    w = torch.randn((4, 2) + kernel, generator=g, dtype=torch.float64)
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[dims]
    want = conv(x, w, stride=stride, padding=padding, dilation=dilation)
    a = conv_weight.patches(x, kernel, stride, padding, dilation)  # (n, t, i)
    got = (a @ w.reshape(4, -1).T).transpose(1, 2).reshape(want.shape)
    torch.testing.assert_close(got, want)


def test_unfold_and_native_only_where_they_apply():
    assert "unfold" in conv_weight.applicable(_factor())
    assert "unfold" not in conv_weight.applicable(_factor(groups=2))
    assert "unfold" not in conv_weight.applicable(_factor(transposed=True))
    assert ("native" in conv_weight.applicable(_factor(groups=2))) == ftdfast.native._ext.HAS_NATIVE
    assert "native" not in conv_weight.applicable(_factor(), "ref")
    assert "native" not in conv_weight.applicable(_factor(transposed=True))


def test_choice_is_timed_once_then_cached(monkeypatch):
    monkeypatch.delenv("FTDFAST_CONV_METHOD", raising=False)
    monkeypatch.setattr(conv_weight, "_CHOICE", {})
    f = _factor()
    first = conv_weight.choose(f, ftdfast.native.ops.sq_grad_sum_linear, "auto")
    assert first in conv_weight.applicable(f) and len(conv_weight._CHOICE) == 1
    monkeypatch.setattr(conv_weight, "METHODS", {})  # a cached choice runs nothing
    assert conv_weight.choose(f, ftdfast.native.ops.sq_grad_sum_linear, "auto") == first


def test_unknown_forced_method(monkeypatch):
    monkeypatch.setenv("FTDFAST_CONV_METHOD", "winograd")
    with pytest.raises(ValueError, match="FTDFAST_CONV_METHOD='winograd'"):
        conv_weight.choose(_factor(), ftdfast.native.ops.sq_grad_sum_linear, "auto")
