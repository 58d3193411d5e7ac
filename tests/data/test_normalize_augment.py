import numpy as np
import pytest
import torch

from ftdfast.data import KNOWN_STATS, augment, channel_stats, denormalize, from_tensors, load_digits


def test_channel_stats_match_numpy():
    x = torch.rand(37, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * torch.tensor([1, 2, 3]).view(1, 3, 1, 1)
    mean, std = channel_stats(x, chunk=8)
    a = x.double().numpy()
    np.testing.assert_allclose(mean, a.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, a.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)


def test_constant_channel_gets_unit_std():
    x = torch.full((4, 1, 2, 2), 0.5)
    assert channel_stats(x) == ((0.5,), (1.0,))


def test_auto_uses_known_stats_for_known_names_else_computes():
    x = torch.rand(9, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(9) % 3
    d = from_tensors(x, y, x, y, name="fashion-mnist")
    assert (d.mean, d.std) == KNOWN_STATS["fashion-mnist"]
    torch.testing.assert_close(denormalize(d.x_test, d.mean, d.std), x, rtol=0, atol=1e-6)
    e = from_tensors(x, y, x, y, name="mine")
    assert abs(float(e.x_train.mean())) < 1e-6
    assert abs(float(e.x_train.std(unbiased=False)) - 1) < 1e-5
    f = from_tensors(x, y, x, y, name="mnist", normalize="compute")
    assert f.mean == e.mean
    g = from_tensors(x, y, x, y, normalize=((0.25,), (0.5,)))
    torch.testing.assert_close(g.x_train, (x - 0.25) / 0.5, rtol=0, atol=1e-6)
    assert torch.equal(from_tensors(x, y, x, y, normalize=None).x_train, x)


def test_digits_table_matches_the_data():
    raw = load_digits(normalize=None)
    mean, std = channel_stats(torch.cat([raw.x_train, raw.x_test]))
    np.testing.assert_allclose(KNOWN_STATS["digits"], (mean, std), rtol=0, atol=5e-4)


X = torch.randn(7, 2, 5, 6, generator=torch.Generator().manual_seed(2))


def test_augment_deterministic_shape_and_input_untouched():
    before = X.clone()
    a = augment(X, torch.Generator().manual_seed(0))
    b = augment(X, torch.Generator().manual_seed(0))
    c = augment(X, torch.Generator().manual_seed(1))
    assert a.shape == X.shape and a.dtype == X.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(X, before)


def test_augment_identity_without_crop_or_flip():
    out = augment(X, torch.Generator(), crop_padding=0, flip=False)
    assert torch.equal(out, X) and out is not X


def test_flip_only_mirrors_some_samples():
    out = augment(X, torch.Generator().manual_seed(3), crop_padding=0, flip=True)
    same = [torch.equal(o, x) for o, x in zip(out, X)]
    mirrored = [torch.equal(o, x.flip(-1)) for o, x in zip(out, X)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)


@pytest.mark.parametrize("p", [1, 3])
def test_crop_is_a_window_of_the_zero_padded_image(p):
    out = augment(X, torch.Generator().manual_seed(4), crop_padding=p, flip=False)
    padded = torch.nn.functional.pad(X, (p, p, p, p))
    h, w = X.shape[2:]
    for o, xp in zip(out, padded):
        windows = [xp[:, i:i + h, j:j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]
        assert any(torch.equal(o, win) for win in windows)
