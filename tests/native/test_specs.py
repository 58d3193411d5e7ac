"""Every native op, read from its spec (ftdfast.native.reference.SPECS), on every sample, CPU and CUDA.

Per op, dtype and device: the native kernel against the op's reference on float64 CPU copies of the
same (rounded) inputs, within the spec's tolerance, on its samples and its awkward samples (empty
dimensions, one sample, several tiles, chunks or sample splits); ``torch.library.opcheck`` (schema,
fake kernel, dispatch) on its samples; the ``ftdfast.native.ops`` wrapper returning the native result.
A new op gets all of these from its spec. The references themselves are checked against independent
per-sample oracles in tests/test_ops*.py.
"""
from __future__ import annotations

import pytest
import torch

from ftdfast.native import _ext, ops
from ftdfast.native.reference import SPECS
from ftdfast.native.spec import moved

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")
DTYPES = dict(argnames="dtype", argvalues=[torch.float64, torch.float32], ids=["f64", "f32"])
DEVICES = dict(argnames="device", argvalues=[
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not _ext.HAS_CUDA, reason="needs the CUDA kernels")]),
])


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _cases(awkward: bool) -> list:
    """(op, sample id) of every sample of every spec, with readable ids."""
    return [pytest.param(op, pid, id=f"{spec.name}-{pid}")
            for op, spec in SPECS.items() for pid in (spec.awkward_samples if awkward else spec.samples)(_gen())]


def _inputs(op: str, pid: str, device: str, dtype: torch.dtype, awkward: bool) -> list:
    if device != "cpu" and not _ext.has_kernel(op, device):
        pytest.skip(f"{op} has no {device} kernel")  # a CPU-only op
    return dict(SPECS[op].sample_inputs(_gen(), device, dtype, awkward=awkward))[pid]


def _assert_matches_reference(op: str, inputs: list, device: str, dtype: torch.dtype, got=None) -> None:
    spec = SPECS[op]
    want = spec.reference(*moved(inputs, torch.device("cpu"), torch.float64))
    got = spec.native(*inputs) if got is None else got
    device = torch.device(device) if device == "cpu" else torch.device("cuda", torch.cuda.current_device())
    err = spec.error(got, want, device, dtype)
    assert err <= spec.tolerance[dtype], f"{op} on {device} in {dtype}: error {err:.3e} > {spec.tolerance[dtype]:.0e}"


@needs_native
@pytest.mark.parametrize(**DEVICES)
@pytest.mark.parametrize(**DTYPES)
@pytest.mark.parametrize("op, pid", _cases(awkward=False) + _cases(awkward=True))
def test_native_matches_reference(op, pid, dtype, device):
    awkward = pid not in SPECS[op].samples(_gen())
    _assert_matches_reference(op, _inputs(op, pid, device, dtype, awkward), device, dtype)


@needs_native
@pytest.mark.parametrize(**DEVICES)
@pytest.mark.parametrize("op, pid", _cases(awkward=False))
def test_opcheck(op, pid, device):
    inputs = _inputs(op, pid, device, torch.float64, awkward=False)
    torch.library.opcheck(getattr(torch.ops.ftdfast, SPECS[op].name).default, tuple(inputs))


@needs_native
@pytest.mark.parametrize(**DEVICES)
@pytest.mark.parametrize("op, pid", _cases(awkward=False))
def test_ops_wrapper_gives_the_native_result(op, pid, device):
    inputs = _inputs(op, pid, device, torch.float32, awkward=False)
    got = getattr(ops, SPECS[op].name)(*inputs)
    torch.testing.assert_close(got, SPECS[op].native(*inputs), rtol=0.0, atol=0.0)


@pytest.mark.parametrize("op, pid", _cases(awkward=False) + _cases(awkward=True))
def test_samples_are_valid_inputs(op, pid):
    """Every sample passes the op's input check, and the fake kernel gives the reference's shape and dtype."""
    spec = SPECS[op]
    awkward = pid not in spec.samples(_gen())
    inputs = _inputs(op, pid, "cpu", torch.float64, awkward)
    spec.check(*inputs)
    fake, want = spec.fake(*inputs), spec.reference(*inputs)
    assert (fake.shape, fake.dtype) == (want.shape, want.dtype)


def test_specs_are_named_for_their_ops():
    for op, spec in SPECS.items():
        assert op == spec.qualname == f"ftdfast::{spec.name}"
        assert set(spec.tolerance) == {torch.float32, torch.float64}
        assert hasattr(ops, spec.name), f"ftdfast.native.ops has no public function for {op}"
