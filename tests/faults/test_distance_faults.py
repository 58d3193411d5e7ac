"""The task distance does not depend on the scale of either Fisher, even far from 1.

Fisher diagonals of tiny losses (float64) can have traces of 1e-200 and below; products of raw
entries then leave double's normal range. Each case: a readable id, the dtype, the scale applied
to both Fishers (or to one), and the op; the expected value is the float64 distance of the unscaled
Fishers from the definition (independent of ftdfast), within a tolerance per dtype.
"""
from __future__ import annotations

import math

import pytest
import torch

from ftdfast.native import _ext, ops, reference

TOL = {torch.float64: 1e-12, torch.float32: 1e-6}
SCALES = {
    torch.float64: [1e-160, 1e-200, 1e-300, 1e-310, 1e+150, 1e+250],
    torch.float32: [1e-20, 1e-30, 1e+25],  # traces stay inside float32's range
}


def fishers():
    """Two lists shaped like a small net, with zeros, a wide dynamic range and several chunks."""
    g = torch.Generator().manual_seed(0)
    shapes = [(70_000,), (30, 7), (5,), ()]
    a = [torch.rand(s, generator=g, dtype=torch.float64) ** 4 for s in shapes]
    b = [torch.rand(s, generator=g, dtype=torch.float64) ** 2 for s in shapes]
    a[0][::7] = 0.0
    return a, b


def distance_by_definition(a, b) -> float:
    x, y = torch.cat([t.reshape(-1) for t in a]), torch.cat([t.reshape(-1) for t in b])
    d2 = 0.5 * ((x / x.sum()).sqrt() - (y / y.sum()).sqrt()).square().sum()
    return math.sqrt(float(d2))


def close_pair():
    """b a small perturbation of a: d ~ 1e-3, where pass 2 (no cancellation) is used."""
    a, _ = fishers()
    g = torch.Generator().manual_seed(1)
    return a, [t * (1 + 1e-3 * torch.rand(t.shape, generator=g, dtype=torch.float64)) for t in a]


OPS = {
    "fisher_distance": lambda a, b: ops.fisher_distance(a, b),
    "fisher_distance_ref": lambda a, b: reference.fisher_distance_ref(a, b),
    "fisher_distance_matrix": lambda a, b: ops.fisher_distance_matrix(_rows(a, b), _rows(a, b))[0, 1],
    "fisher_distance_matrix_ref": lambda a, b: reference.fisher_distance_matrix_ref(_rows(a, b), _rows(a, b))[0, 1],
    "fisher_distance_matrix_rows_cols": lambda a, b: ops.fisher_distance_matrix(_rows(a), _rows(b))[0, 0],
}
NATIVE_OPS = {"fisher_distance", "fisher_distance_matrix", "fisher_distance_matrix_rows_cols"}


def _rows(*lists):
    return torch.stack([torch.cat([t.reshape(-1) for t in fs]) for fs in lists])


CASES = [
    pytest.param(op, dtype, scale, pair, id=f"{op}-{str(dtype)[6:]}-{scale:g}-{pair}")
    for op in OPS for dtype in SCALES for scale in SCALES[dtype] for pair in ("far", "close")
]


@pytest.mark.parametrize("op,dtype,scale,pair", CASES)
def test_distance_of_scaled_fishers_is_the_unscaled_distance(op, dtype, scale, pair):
    if op in NATIVE_OPS and not _ext.HAS_NATIVE:
        pytest.skip("native extension not built (the reference path is tested)")
    a, b = fishers() if pair == "far" else close_pair()
    a, b = [t.to(dtype) for t in a], [t.to(dtype) for t in b]  # unscaled, in the dtype tested
    expected = distance_by_definition([t.double() for t in a], [t.double() for t in b])
    scaled_a = [(t.double() * scale).to(dtype) for t in a]
    scaled_b = [(t.double() * scale).to(dtype) for t in b]
    got = float(OPS[op](scaled_a, scaled_b))
    # 1e-310 makes the float64 entries subnormal: they keep fewer digits, so compare to the distance
    # of what is stored (the definition on the stored, scaled values)
    if scale < 2.3e-308 * 1e10:
        expected = distance_by_definition([t.double() for t in scaled_a], [t.double() for t in scaled_b])
    assert abs(got - expected) <= TOL[dtype] * max(expected, 1e-3), (got, expected)


@pytest.mark.parametrize("op", sorted(NATIVE_OPS))
def test_only_one_fisher_scaled(op):
    if not _ext.HAS_NATIVE:
        pytest.skip("native extension not built")
    a, b = fishers()
    expected = distance_by_definition(a, b)
    for sa, sb in ((1e-200, 1.0), (1.0, 1e+200), (1e-150, 1e+150)):
        got = float(OPS[op]([t * sa for t in a], [t * sb for t in b]))
        assert abs(got - expected) <= 1e-12, (sa, sb, got, expected)
