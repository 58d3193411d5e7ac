"""fisher_task_distance, legacy_distance, cosine_distance and the zero padding, against float64 NumPy."""
import math

import numpy as np
import pytest
import torch

from ftdfast.native import _ext
from ftdfast.distance import cosine_distance, fisher_task_distance, legacy_distance, pad_head, pad_to_common
from ftdfast.fisher import FisherDiagonal

AWKWARD_SHAPES = [(), (1,), (3, 5), (0, 4), (2, 1, 7), (13,), (1, 1)]


@pytest.fixture(params=["native", "reference"])
def impl(request, monkeypatch):
    """Run each test with the native op and with the pure-PyTorch reference."""
    if request.param == "native":
        if not _ext.HAS_NATIVE:
            pytest.skip("native extension not built")
    else:
        monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    return request.param


def random_fisher(gen, shapes=AWKWARD_SHAPES, dtype=torch.float64, zero_frac=0.3):
    """Non-negative tensors of the given shapes, with some exact zeros and a wide range of magnitudes."""
    out = []
    for shape in shapes:
        t = torch.rand(shape, generator=gen, dtype=torch.float64) ** 3 * 10.0 ** torch.randint(
            -3, 3, shape, generator=gen).double()
        t = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < zero_frac, 0.0, t)
        out.append(t.to(dtype))
    out[-1] = out[-1] + 1e-3  # never all zeros
    return out


def np_flat(fs):
    return np.concatenate([np.asarray(t, dtype=np.float64).reshape(-1) for t in fs])


def np_ftd(fa, fb):
    p, q = np_flat(fa), np_flat(fb)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)) / math.sqrt(2.0))


def np_cosine(fa, fb):
    a, b = np_flat(fa), np_flat(fb)
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("seed", range(6))
def test_matches_numpy_on_awkward_shapes(impl, seed):
    gen = torch.Generator().manual_seed(seed)
    fa, fb = random_fisher(gen), random_fisher(gen)
    got = fisher_task_distance(fa, fb)
    assert isinstance(got, float)
    assert got == pytest.approx(np_ftd(fa, fb), abs=1e-12)


def test_float32_inputs_close_to_float64_numpy(impl):
    gen = torch.Generator().manual_seed(11)
    fa, fb = random_fisher(gen, dtype=torch.float32), random_fisher(gen, dtype=torch.float32)
    assert fisher_task_distance(fa, fb) == pytest.approx(np_ftd(fa, fb), abs=1e-6)


def test_mixed_dtypes_are_computed_in_float64(impl):
    gen = torch.Generator().manual_seed(12)
    fa = random_fisher(gen, dtype=torch.float32)
    fb = [t.to(torch.float16 if k % 2 else torch.float64) for k, t in enumerate(random_fisher(gen))]
    assert fisher_task_distance(fa, fb) == pytest.approx(np_ftd(fa, fb), abs=1e-12)


def test_identical_is_exactly_zero_and_proportional_is_zero(impl):
    gen = torch.Generator().manual_seed(1)
    fa = random_fisher(gen)
    assert fisher_task_distance(fa, [t.clone() for t in fa]) == 0.0
    assert fisher_task_distance(fa, [7.25 * t for t in fa]) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("seed", range(20))
def test_range_zero_one_and_symmetric(impl, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    fa = random_fisher(gen, zero_frac=seed / 20)
    fb = random_fisher(gen, zero_frac=0.5)
    d = fisher_task_distance(fa, fb)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(fisher_task_distance(fb, fa), abs=1e-14)


def test_disjoint_supports_give_one(impl):
    assert fisher_task_distance([torch.tensor([1.0, 2.0, 0.0, 0.0])], [torch.tensor([0.0, 0.0, 3.0, 5.0])]) == 1.0
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(4001, generator=gen) < 0.5
    fa = [torch.where(mask, torch.rand(4001, generator=gen, dtype=torch.float64) + 0.1, 0.0).reshape(1, 4001)]
    fb = [torch.where(~mask, torch.rand(4001, generator=gen, dtype=torch.float64) + 0.1, 0.0).reshape(1, 4001)]
    assert fisher_task_distance(fa, fb) == pytest.approx(1.0, abs=1e-12)  # 1 up to one rounding of the sum


@pytest.mark.parametrize("scale", [1e-8, 0.37, 3.0, 1e9])
@pytest.mark.parametrize("side", ["a", "b"])
def test_invariant_to_positive_scaling(impl, scale, side):
    gen = torch.Generator().manual_seed(5)
    fa, fb = random_fisher(gen), random_fisher(gen)
    base = fisher_task_distance(fa, fb)
    if side == "a":
        fa = [scale * t for t in fa]
    else:
        fb = [scale * t for t in fb]
    assert fisher_task_distance(fa, fb) == pytest.approx(base, abs=1e-12)


def test_input_forms_agree(impl):
    gen = torch.Generator().manual_seed(6)
    fa, fb = random_fisher(gen), random_fisher(gen)
    names = [f"layer{k}.weight" for k in range(len(fa))]
    da, db = dict(zip(names, fa)), dict(zip(names, fb))
    expected = np_ftd(fa, fb)
    forms = [
        (fa, fb), (tuple(fa), tuple(fb)), (da, db), (da, fb), (fa, db),
        (FisherDiagonal(da, num_samples=3), FisherDiagonal(db, num_samples=5)),
        (da, dict(reversed(list(db.items())))),  # matched by name, not by order
        ([t.numpy() for t in fa], [t.numpy() for t in fb]),
    ]
    for a, b in forms:
        assert fisher_task_distance(a, b) == pytest.approx(expected, abs=1e-12)


def test_gradients_needed_inputs_are_detached(impl):
    fa = [torch.rand(3, 4, dtype=torch.float64, requires_grad=True)]
    fb = [torch.rand(3, 4, dtype=torch.float64)]
    assert fisher_task_distance(fa, fb) == pytest.approx(np_ftd([fa[0].detach()], fb), abs=1e-12)


# ----------------------------------------------------------------- legacy and cosine


@pytest.mark.parametrize("seed", range(4))
def test_legacy_is_the_square_and_the_authors_formula(impl, seed):
    gen = torch.Generator().manual_seed(20 + seed)
    fa, fb = random_fisher(gen), random_fisher(gen)
    d = fisher_task_distance(fa, fb)
    assert legacy_distance(fa, fb) == pytest.approx(d * d, rel=1e-12)
    p, q = np_flat(fa), np_flat(fb)
    p, q = p / p.sum(), q / q.sum()
    assert legacy_distance(fa, fb) == pytest.approx(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_cosine_matches_numpy(seed):
    gen = torch.Generator().manual_seed(40 + seed)
    fa, fb = random_fisher(gen), random_fisher(gen, dtype=torch.float32)
    got = cosine_distance(fa, fb)
    assert isinstance(got, float) and 0.0 <= got <= 1.0
    assert got == pytest.approx(np_cosine(fa, fb), abs=1e-12)
    assert cosine_distance(fa, [2.5 * t for t in fa]) == pytest.approx(0.0, abs=1e-12)
    assert cosine_distance([torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 4.0])]) == 1.0


def test_cosine_differs_from_fisher_distance():
    """The baseline uses the raw entries: one dominant entry drives it, not the normalized shape."""
    fa = [torch.tensor([100.0, 1.0, 1.0], dtype=torch.float64)]
    fb = [torch.tensor([100.0, 0.0, 9.0], dtype=torch.float64)]
    assert cosine_distance(fa, fb) == pytest.approx(np_cosine(fa, fb), abs=1e-12)
    assert abs(cosine_distance(fa, fb) - fisher_task_distance(fa, fb)) > 0.05


# -------------------------------------------------------------------------- padding


def test_pad_to_common_pads_head_rows_with_zeros():
    gen = torch.Generator().manual_seed(7)
    body = torch.rand(4, 6, generator=gen, dtype=torch.float64)
    fa = {"body.weight": body, "head.weight": torch.rand(3, 4, generator=gen, dtype=torch.float64) + 0.1,
          "head.bias": torch.rand(3, generator=gen, dtype=torch.float64)}
    fb = {"body.weight": body.clone(), "head.weight": torch.rand(5, 4, generator=gen, dtype=torch.float64),
          "head.bias": torch.rand(5, generator=gen, dtype=torch.float64)}
    pa, pb = pad_to_common(fa, fb)
    assert list(pa) == list(fa) and list(pb) == list(fa)
    for name in fa:
        assert pa[name].shape == pb[name].shape
    assert pa["head.weight"].shape == (5, 4) and pa["head.bias"].shape == (5,)
    torch.testing.assert_close(pa["head.weight"][:3], fa["head.weight"], rtol=0, atol=0)
    assert (pa["head.weight"][3:] == 0).all() and (pa["head.bias"][3:] == 0).all()
    # unpadded tensors are not copied
    assert pa["body.weight"].data_ptr() == fa["body.weight"].data_ptr()
    assert pb["head.weight"].data_ptr() == fb["head.weight"].data_ptr()
    # the larger side may be either one, parameter by parameter
    pb2, pa2 = pad_to_common(fb, fa)
    torch.testing.assert_close(pa2["head.bias"], pa["head.bias"], rtol=0, atol=0)
    # and the padded Fishers give the NumPy distance of the padded arrays
    ref = np_ftd([pa[n].numpy() for n in fa], [pb[n].numpy() for n in fa])
    assert fisher_task_distance(pa, pb) == pytest.approx(ref, abs=1e-12)


def test_pad_to_common_lists_and_conv_heads():
    fa = [torch.ones(2, 3, 3, 3), torch.ones(2)]
    fb = [torch.ones(4, 3, 3, 3), torch.ones(4)]
    pa, pb = pad_to_common(fa, fb)
    assert list(pa) == ["[0]", "[1]"]
    assert pa["[0]"].shape == (4, 3, 3, 3) and pa["[0]"][2:].abs().sum() == 0 and pa["[0]"][:2].sum() == 54


def test_pad_head_and_its_errors():
    t = torch.arange(6.0).reshape(2, 3)
    p = pad_head(t, (4, 5))
    assert p.shape == (4, 5) and torch.equal(p[:2, :3], t) and p.sum() == t.sum()
    assert pad_head(t, [2, 3]) is t  # nothing to pad: no copy
    with pytest.raises(ValueError, match=r"shape \[2, 3\] to \[1, 3\]"):
        pad_head(t, (1, 3))
    with pytest.raises(ValueError, match="same number of dims"):
        pad_head(t, (2, 3, 1))


def test_pad_to_common_refuses_non_head_differences():
    with pytest.raises(ValueError, match=r"'conv.weight'.*\[4, 3\].*\[4, 5\].*only the head rows"):
        pad_to_common({"conv.weight": torch.ones(4, 3)}, {"conv.weight": torch.ones(4, 5)})
    with pytest.raises(ValueError, match="different parameter names \\('a' is only in F_a\\)"):
        pad_to_common({"a": torch.ones(1)}, {"b": torch.ones(1)})
    with pytest.raises(ValueError, match="F_a has 1 parameters but F_b has 2"):
        pad_to_common([torch.ones(1)], [torch.ones(1), torch.ones(1)])


# ---------------------------------------------------------------------- bad inputs


GOOD = {"fc.weight": torch.ones(3, 4), "fc.bias": torch.ones(3)}


@pytest.mark.parametrize("fn", [fisher_task_distance, legacy_distance, cosine_distance])
def test_shape_mismatch_names_parameter_and_shapes(fn):
    bad = {"fc.weight": torch.ones(5, 4), "fc.bias": torch.ones(5)}
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \[3, 4\] in F_a?b? but \[5, 4\].*pad_to_common"):
        fn(GOOD, bad)


def test_structure_mismatches():
    with pytest.raises(ValueError, match=r"not in F_bb \(first: 'fc.bias'\)"):
        fisher_task_distance(GOOD, {"fc.weight": torch.ones(3, 4)})
    with pytest.raises(ValueError, match=r"F_bb are not in F_ab \(first: 'other'\)"):
        fisher_task_distance(GOOD, {**GOOD, "other": torch.ones(1)})
    with pytest.raises(ValueError, match="F_ab has 2 parameters but F_bb has 1"):
        fisher_task_distance(list(GOOD.values()), [torch.ones(3, 4)])
    with pytest.raises(ValueError, match=r"parameter '\[1\]' has shape \[3\] in F_ab but \[\]"):
        fisher_task_distance(list(GOOD.values()), [torch.ones(3, 4), torch.tensor(1.0)])


def test_bad_types():
    with pytest.raises(TypeError, match="single tensor"):
        fisher_task_distance(torch.ones(3), torch.ones(3))
    with pytest.raises(TypeError, match="F_bb must be a FisherDiagonal"):
        fisher_task_distance(GOOD, "fisher.pt")
    with pytest.raises(TypeError, match=r"F_ab\['\[1\]'\] must be a tensor"):
        fisher_task_distance([torch.ones(1), [1.0]], [torch.ones(1), torch.ones(1)])
    with pytest.raises(TypeError, match="complex"):
        fisher_task_distance([torch.ones(2, dtype=torch.complex64)], [torch.ones(2)])
    with pytest.raises(ValueError, match="F_ab is empty"):
        fisher_task_distance({}, {})


@pytest.mark.parametrize("which", ["F_ab", "F_bb"])
def test_zero_trace_says_which_and_why(which):
    zero = {k: torch.zeros_like(v) for k, v in GOOD.items()}
    args = (zero, GOOD) if which == "F_ab" else (GOOD, zero)
    with pytest.raises(ValueError, match=rf"^{which} has trace 0 .*gradients on the data are all zero"):
        fisher_task_distance(*args)
    with pytest.raises(ValueError, match=rf"^{'F_a' if which == 'F_ab' else 'F_b'} has norm 0"):
        cosine_distance(*args)


@pytest.mark.parametrize("value, message", [(-0.5, r"F_bb\['fc.bias'\] has a negative entry \(min -0.5\)"),
                                            (float("nan"), r"F_bb\['fc.bias'\] has NaN entries"),
                                            (float("inf"), r"F_bb\['fc.bias'\] has infinite entries"),
                                            (-float("inf"), r"F_bb\['fc.bias'\] has infinite entries")])
def test_bad_values(impl, value, message):
    bad = {"fc.weight": torch.ones(3, 4), "fc.bias": torch.tensor([1.0, value, 2.0])}
    with pytest.raises(ValueError, match=message):
        fisher_task_distance(GOOD, bad)
    with pytest.raises(ValueError, match=message.replace("F_bb", "F_b")):
        cosine_distance(GOOD, bad)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_inputs_and_mixed_devices(dtype):
    gen = torch.Generator().manual_seed(50)
    fa, fb = random_fisher(gen, dtype=dtype), random_fisher(gen, dtype=dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    expected = np_ftd(fa, fb)
    on_gpu = [t.cuda() for t in fa], [t.cuda() for t in fb]
    assert fisher_task_distance(*on_gpu) == pytest.approx(expected, abs=tol)
    assert fisher_task_distance(on_gpu[0], fb) == pytest.approx(expected, abs=tol)  # moved to the CPU in float64
    assert cosine_distance(on_gpu[0], fb) == pytest.approx(np_cosine(fa, fb), abs=tol)
