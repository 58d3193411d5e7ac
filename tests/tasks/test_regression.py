import math

import pytest
import torch

from ftdfast.data import LabeledData
from ftdfast.tasks import RegressionTask, TARGETS, gaussian_blur, image_tasks, sobel_magnitude

from .common import make_data


def _images(x_train: torch.Tensor, x_test: torch.Tensor, name="img") -> LabeledData:
    c = x_train.shape[1]
    return LabeledData(name, x_train, torch.zeros(len(x_train), dtype=torch.int64), x_test,
                       torch.zeros(len(x_test), dtype=torch.int64), ("only",), (0.0,) * c, (1.0,) * c)


G = torch.Generator().manual_seed(0)
COLOUR = _images(torch.randn(6, 3, 5, 7, generator=G), torch.randn(4, 3, 5, 7, generator=G))
GREY = _images(torch.randn(5, 1, 6, 4, generator=G), torch.randn(3, 1, 6, 4, generator=G))


@pytest.mark.parametrize("data", [COLOUR, GREY], ids=["colour", "grey"])
@pytest.mark.parametrize("target", TARGETS)
def test_shapes_and_loss(data, target):
    td = RegressionTask(f"t:{target}", target).build(data, seed=0)
    c, h, w = data.input_shape
    out_c = 1 if target in ("edges", "grey") else c
    assert td.loss == "mse" and td.num_classes is None
    assert td.input_shape == (c, h, w) and td.output_shape == (out_c, h, w)
    assert td.y_train.shape == (len(data.x_train), out_c, h, w) and td.y_test.dtype == torch.float32


def _rows_of(x: torch.Tensor, pool: torch.Tensor) -> bool:
    """Every sample of x is one of pool's."""
    return all(any(torch.equal(a, b) for b in pool) for a in x)


def test_autoencode_and_grey_of_grey_data_are_the_input():
    for target in ("autoencode", "grey"):
        td = RegressionTask("a", target).build(GREY, seed=1)
        assert torch.equal(td.y_train, td.x_train) and torch.equal(td.y_test, td.x_test)
        assert _rows_of(td.x_train, GREY.x_train)


def test_grey_of_colour_is_the_luma():
    td = RegressionTask("g", "grey").build(COLOUR, seed=0)
    x = td.x_test[2, :, 3, 4]
    want = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    torch.testing.assert_close(td.y_test[2, 0, 3, 4], want, rtol=1e-6, atol=1e-6)


def test_edges_of_constant_image_are_zero_and_of_a_step_are_four():
    const = torch.full((1, 1, 5, 6), 0.7)
    torch.testing.assert_close(sobel_magnitude(const), torch.zeros_like(const), rtol=0, atol=1e-6)
    step = torch.zeros(1, 1, 4, 6)
    step[..., 3:] = 1.0
    # gx at columns 2 and 3 = (1 + 2 + 1) * (1 - 0); gy = 0 (rows are equal)
    want = torch.tensor([[0.0, 0.0, 4.0, 4.0, 0.0, 0.0]] * 4)
    torch.testing.assert_close(sobel_magnitude(step)[0, 0], want, rtol=0, atol=1e-6)


def test_edges_target_matches_its_input():
    td = RegressionTask("e", "edges").build(COLOUR, seed=3)
    torch.testing.assert_close(td.y_train, sobel_magnitude(td.x_train), rtol=0, atol=0)


def test_blur_keeps_constants_and_spreads_a_point():
    const = torch.full((2, 3, 4, 5), -1.5)
    torch.testing.assert_close(gaussian_blur(const), const, rtol=0, atol=1e-6)
    point = torch.zeros(1, 1, 9, 9)
    point[0, 0, 4, 4] = 1.0
    out = gaussian_blur(point)[0, 0]
    s = 1 + 2 * math.exp(-0.5) + 2 * math.exp(-2)          # sum of the 1-D weights exp(-r^2 / 2), r = -2..2
    assert abs(float(out[4, 4]) - 1 / s ** 2) < 1e-6
    assert abs(float(out[4, 5]) - math.exp(-0.5) / s ** 2) < 1e-6
    assert abs(float(out.sum()) - 1.0) < 1e-6 and abs(float(out[4, 7])) < 1e-7


def test_denoise_adds_seeded_noise_of_std_point_three():
    big = _images(torch.zeros(50, 1, 8, 8), torch.zeros(20, 1, 8, 8))
    td = RegressionTask("d", "denoise").build(big, seed=0)
    assert torch.equal(td.y_train, torch.zeros_like(td.y_train))
    noise = td.x_train - td.y_train
    assert abs(float(noise.std()) - 0.3) < 0.02 and abs(float(noise.mean())) < 0.02
    again = RegressionTask("d", "denoise").build(big, seed=0)
    other = RegressionTask("d", "denoise").build(big, seed=1)
    assert torch.equal(td.x_test, again.x_test) and not torch.equal(td.x_test, other.x_test)


def test_image_tasks_and_dicts():
    tasks = image_tasks(GREY)
    assert [t.target for t in tasks] == list(TARGETS)
    assert [t.name for t in tasks] == [f"img:{t}" for t in TARGETS]
    assert all(RegressionTask.from_dict(t.to_dict()) == t for t in tasks)
    with pytest.raises(ValueError, match=r"target='sharpen' is not one of \('autoencode'"):
        RegressionTask("x", "sharpen")


def test_regression_fingerprints():
    a = RegressionTask("b", "blur").build(COLOUR, seed=0)
    assert a.fingerprint() == RegressionTask("b", "blur").build(COLOUR, seed=0).fingerprint()
    assert a.fingerprint() != RegressionTask("b", "blur").build(COLOUR, seed=1).fingerprint()
    assert a.fingerprint() != RegressionTask("b", "autoencode").build(COLOUR, seed=0).fingerprint()


def test_regression_task_data_feeds_fisher_diagonal():
    from ftdfast import fisher_diagonal
    td = RegressionTask("e", "edges").build(make_data([4, 3], [3, 2], shape=(3, 5, 5)), seed=0)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, td.output_shape[0], 3, padding=1)
    f = fisher_diagonal(model, td.test, loss=td.loss, progress=False)
    assert f.num_samples == 5 and set(f) == {"weight", "bias"}
