"""pytest-benchmark timings of ``fisher_diagonal`` on the five benchmark models.

Run from the repository root (these are not unit tests: ``pytest tests`` does not collect them)::

    .venv/bin/python -m pytest benchmarks/speed/bench_fisher.py --benchmark-only
    .venv/bin/python -m pytest benchmarks/speed/bench_fisher.py --benchmark-only -k resnet18
    .venv/bin/python -m pytest benchmarks/speed/bench_fisher.py --benchmark-only --benchmark-group-by=param:model_id

One benchmark per (model, backend) for ``backend`` in ``baseline`` (one plain forward +
backward of the mean cross-entropy loss on the full batch: the reference time), ``rules``
and ``native`` (only where the extension is built). Every Fisher benchmark first asserts
its result on the first 16 samples against the ``"loop"`` backend in float64 on a float64
copy of the model (per parameter, ``max|F - F_ref| / max|F_ref| <= 2e-3``), then times
``fisher_diagonal`` on the full batch (one batch, ``batch_size=N``) with
``benchmark.pedantic`` after one warm-up round. Models and data: :mod:`benchmarks.speed.models`.
For time ratios to the baseline and peak memory, see ``python -m benchmarks.speed.compare``.
"""
from __future__ import annotations

import functools

import pytest

from ftdfast.native import _ext

from . import models as M
from .compare import BASELINE, CHECK_SAMPLES, RTOL, _quiet, check_backend, reference_fisher, work_for

BACKENDS = ["baseline", "rules"] + (["native"] if _ext.HAS_NATIVE else [])
# Timed rounds per model: each benchmark stays well under a minute on a 2-core CPU.
ROUNDS = {"mlp": 20, "lenet": 5, "vgg": 5, "resnet18": 3, "transformer": 5}


@functools.lru_cache(maxsize=None)
def _problem(model_id: str):
    """(model, X, y, float64 loop reference on the first CHECK_SAMPLES samples), built once per model."""
    model, x, y = M.get(model_id).build()
    return model, x, y, reference_fisher(model, x, y, CHECK_SAMPLES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_id", M.MODEL_IDS)
def test_fisher(benchmark, model_id: str, backend: str):
    _quiet()
    model, x, y, reference = _problem(model_id)
    benchmark.group = model_id
    benchmark.extra_info.update(model=model_id, backend=backend, n=len(y))
    if backend != "baseline":
        check = check_backend(model, x, y, backend, reference, CHECK_SAMPLES, RTOL)
        benchmark.extra_info["max_rel_err"] = check["max_rel_err"]
        if check.get("warnings"):
            benchmark.extra_info["warnings"] = check["warnings"]
        assert check["status"] == "ok", (
            f"{backend} on {model_id}: max relative error {check['max_rel_err']:.3g} "
            f"in {check['worst_param']} (rtol {RTOL})")
    fn = work_for(BASELINE if backend == "baseline" else backend, model, x, y)
    benchmark.pedantic(fn, rounds=ROUNDS[model_id], iterations=1, warmup_rounds=1)
