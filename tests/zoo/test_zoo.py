"""Every zoo model (benchmarks/speed/zoo_models.py): the default fast path against the independent float64
per-sample reference (benchmarks/speed/zoo_reference.py), on separately built but identical copies (a
module's caches, e.g. timm's eval-mode attention-bias caches, never leak from one run to the other).

Exact means, per parameter: max |F - F_ref| <= 1e-9 times the model's largest Fisher entry, and
never all zeros where the reference is not (a zero Fisher is what a cached parameter-derived
tensor produces, whatever its size).
"""
from __future__ import annotations

import pytest
import torch

import ftdfast

from benchmarks.speed.zoo_models import ZOO, build
from benchmarks.speed.zoo_reference import fisher_reference, max_relative_errors

TOL = 1e-9  # float64, relative to the model's largest Fisher entry

# Known defects of the fast path, with the error measured on the entry (strict xfails):
XFAIL: dict = {}  # entry id -> why the fast path is still wrong there (none known)


def _params(entry):
    marks = []
    if entry.available() is not None:
        marks.append(pytest.mark.skip(reason=entry.available()))
    elif entry.id in XFAIL:
        marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[entry.id]))
    return pytest.param(entry, id=entry.id, marks=marks)


@pytest.mark.parametrize("entry", [_params(e) for e in ZOO])
def test_zoo_model_is_exact(entry):
    model, x, y = build(entry)
    want = fisher_reference(model, x, y)
    fresh, x, y = build(entry)
    got = ftdfast.fisher_diagonal(fresh, (x, y), progress=False, batch_size=len(y))
    errors = max_relative_errors(got, want)
    wrong = {k: e for k, e in errors.items() if e > TOL}
    zeroed = [k for k in want if bool(want[k].ne(0).any()) and not bool(got[k].ne(0).any())]
    assert not wrong and not zeroed, (
        f"{len(wrong)} parameters off by more than {TOL} of the largest entry "
        f"(worst: {sorted(wrong.items(), key=lambda kv: -kv[1])[:3]}); all zero but not in the reference: "
        f"{zeroed[:3]}")
    assert got.num_samples == len(y)


def test_the_zoo_covers_every_library():
    assert {e.library for e in ZOO} == {"torch", "torchvision", "timm", "transformers"}
    assert set(XFAIL) <= {e.id for e in ZOO}
